import numpy as np

from medtransfer.analysis.loading import RowView, resolve_source


def test_row_view_reads_only_the_rows_of_the_pool():
    pixels = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    view = RowView(pixels, np.array([7, 2, 5]))
    assert len(view) == 3
    np.testing.assert_array_equal(view[np.array([0, 2])], pixels[[7, 5]])


def test_relative_source_files_are_found_in_the_study(tmp_path):
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "synth_a.pt").write_bytes(b"")
    assert resolve_source("imagenet", tmp_path) == "imagenet"
    assert resolve_source("sources/synth_a.pt", tmp_path) == str(tmp_path / "sources" / "synth_a.pt")
    assert resolve_source("/elsewhere/old/synth_a.pt", tmp_path) == str(tmp_path / "sources" / "synth_a.pt")
    assert resolve_source("missing.pt", tmp_path) == "missing.pt"  # load_source then names it
