"""Every file the project writes appears whole or not at all (runs.write_atomically and its two siblings): a write that
fails leaves the previous file untouched, no temporary behind, and an error that names the file."""

import ast
import errno
import os

import pytest
import torch
from conftest import REPO

from lightning_diffusion.checkpoints import AtomicCheckpointIO, read_checkpoint
from lightning_diffusion.errors import sentence
from lightning_diffusion.runs import save_atomically, write_atomically, write_folder_atomically


def full_disk_after(limit: int):
    """A write callback that writes `limit` bytes, then fails as a full disk does (an OSError naming no file)."""

    def write(file):
        file.write(b"x" * limit)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_a_full_disk_keeps_the_previous_file_and_names_it(tmp_path):
    path = write_atomically(tmp_path / "metrics_fit.json", '{"old": 1}')
    with pytest.raises(OSError) as raised:
        write_atomically(path, full_disk_after(1000))
    assert path.read_text() == '{"old": 1}'
    assert leftovers(tmp_path) == []
    assert sentence(raised.value) == (
        f"{path}: no space left on device: free disk space or choose another --output_dir."
    )


def test_a_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    def fails(file):
        file.write(b"half")
        raise RuntimeError("the figure could not be drawn")

    with pytest.raises(RuntimeError, match="could not be drawn"):
        write_atomically(tmp_path / "other.png", fails)
    assert not (tmp_path / "other.png").exists()
    assert leftovers(tmp_path) == []


def test_save_atomically_is_a_whole_torch_archive_or_the_previous_one(tmp_path, monkeypatch):
    path = save_atomically(tmp_path / "snapshot.pt", {"w": torch.ones(3)})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error"):
        save_atomically(path, {"w": torch.zeros(3)})
    assert torch.equal(torch.load(path)["w"], torch.ones(3))
    assert leftovers(tmp_path) == []


def test_the_checkpoint_io_writes_beside_its_destination_and_keeps_the_previous_on_failure(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, path)
    assert [os.path.dirname(src) for src, _ in replaced] == [str(path.parent)]  # a rename, never a copy
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as raised:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 2}, path)
    assert raised.value.filename == str(path)
    assert read_checkpoint(path)["global_step"] == 1
    assert leftovers(path.parent) == []


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    def half(partial):
        (partial / "unet").mkdir()
        write_atomically(partial / "unet" / "config.json", "{}")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        write_folder_atomically(tmp_path / "export", half)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    folder = write_folder_atomically(tmp_path / "export", lambda partial: write_atomically(partial / "a.json", "{}"))
    assert (folder / "a.json").read_text() == "{}"
    with pytest.raises(FileExistsError, match="already exists"):  # another process made it first
        write_folder_atomically(folder, lambda partial: write_atomically(partial / "b.json", "{}"))
    assert sorted(p.name for p in folder.iterdir()) == ["a.json"]


# The calls that write a file. Outside runs.py they may only run inside a write callback (a lambda, or a function
# named `write`) handed to one of runs' helpers, which gives it the temporary file or folder.
WRITERS = {"save", "savez", "savez_compressed", "savetxt", "savefig", "save_image", "save_pretrained"}
MOVERS = {"write_text", "write_bytes"} | {
    f"{module}.{name}" for module in ("os", "shutil") for name in ("replace", "rename", "move", "copyfile", "copy")
}
# results.csv grows a row at a time, each row synced, under the lock that `locked` takes
APPENDS = {("tools/report.py", "locked")}


def writes_outside_the_helpers(path):
    found = []

    def visit(node, inside_callback, function):
        if isinstance(node, (ast.Lambda, ast.FunctionDef)):
            name = getattr(node, "name", None)
            inside_callback = inside_callback or isinstance(node, ast.Lambda) or name == "write"
            function = name or function
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            mode = node.args[1] if name == "open" and len(node.args) > 1 else None
            mode = mode.value if isinstance(mode, ast.Constant) else ""
            writes = (
                (name in WRITERS and not inside_callback)
                or name in MOVERS
                or f"{owner}.{name}" in MOVERS
                or any(c in mode for c in "wax")
            )
            if writes and (str(path.relative_to(REPO / "lightning_diffusion")), function) not in APPENDS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
        for child in ast.iter_child_nodes(node):
            visit(child, inside_callback, function)

    visit(ast.parse(path.read_text()), False, None)
    return found


def test_only_the_run_helpers_write_files():
    package = REPO / "lightning_diffusion"
    found = [
        hit
        for path in sorted(package.rglob("*.py"))
        if path.name != "runs.py"
        for hit in writes_outside_the_helpers(path)
    ]
    assert found == []
    assert writes_outside_the_helpers(package / "runs.py")  # the check sees a write where there is one
