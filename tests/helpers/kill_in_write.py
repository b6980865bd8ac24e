"""The real CLI, SIGKILLed inside the write of its N-th checkpoint, as power loss or the OOM killer would end it:

    python tests/helpers/kill_in_write.py N fit --config ... --output_dir ...

An audit hook sees every file the process opens for writing; at the N-th open of a file in a checkpoints/ folder it
arms a profiler that kills the process at the next call into C: inside the write, before the file is complete."""

import os
import signal
import sys

from lightning_diffusion.cli import main

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def kill_at_the_next_c_call(frame, event, arg):
    if event == "c_call":
        os.kill(os.getpid(), signal.SIGKILL)


def arm_at(n: int):
    opened = 0

    def hook(event, args):
        nonlocal opened
        if event != "open" or "checkpoints" not in str(args[0]):
            return
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS):
            opened += 1
            if opened == n:
                sys.setprofile(kill_at_the_next_c_call)

    return hook


if __name__ == "__main__":
    n, args = int(sys.argv[1]), sys.argv[2:]
    sys.argv = sys.argv[:1]
    sys.addaudithook(arm_at(n))
    main(args)
