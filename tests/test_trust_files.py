"""What a folder walk passes over is reported with a reason, never dropped silently."""

from __future__ import annotations

import os

from PIL import Image

from stylesift.featurizer.extract import list_images, walk


def test_a_walk_reports_every_file_and_folder_it_skips(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "inside.jpg").write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(root / "a.jpg")
    Image.new("RGB", (8, 8)).save(root / "sub" / "b.PNG")
    Image.new("RGB", (8, 8)).save(root / "sub" / "no_extension", "PNG")
    (root / "notes.txt").write_text("not a picture")
    (root / ".hidden.jpg").write_bytes(b"x")
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.symlink(other, root / "linked")
    files, skipped = walk([root])
    assert files == [root / "a.jpg", root / "sub" / "b.PNG"] == list_images([root])
    reasons = {s["path"]: s["reason"] for s in skipped}
    assert [s["path"] for s in skipped] == sorted(reasons)
    assert reasons == {
        str(root / ".git"): "hidden folder, not searched",
        str(root / ".hidden.jpg"): "hidden file",
        str(root / "linked"): "symlink to a folder, not followed (name the folder itself to include it)",
        str(root / "notes.txt"): "no image extension (.txt is not one of the image types); name the file itself to try it",
        str(root / "sub" / "no_extension"): "no image extension; name the file itself to try it",
    }
    # named explicitly, a file is always tried and never reported as skipped
    files, skipped = walk([root, root / "notes.txt"])
    assert root / "notes.txt" in files and str(root / "notes.txt") not in {s["path"] for s in skipped}
