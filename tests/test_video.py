import numpy as np
import pytest

from physalign.video import VideoError, read_video, tile, write_gif, write_mp4


def test_mp4_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    write_mp4(tmp_path / "clip.mp4", frames)
    assert np.array_equal(read_video(tmp_path / "clip.mp4"), frames)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_mp4(tmp_path / "a.mp4", np.zeros((4, 8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="junk.mp4: cannot decode"):
        read_video(tmp_path / "junk.mp4")


@pytest.mark.parametrize("bad", [np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8, 3), np.float32)])
def test_write_rejects_bad_frames(tmp_path, bad):
    with pytest.raises(VideoError, match="x.mp4"):
        write_mp4(tmp_path / "x.mp4", bad)


def test_gif_is_written(tmp_path):
    import imageio.v3 as iio

    frames = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 100, 200)])
    write_gif(tmp_path / "a.gif", frames, scale=2)
    frames = iio.imread(tmp_path / "a.gif", index=None)
    assert frames.shape[:3] == (3, 8, 8)


def test_tile_places_videos_and_holds_last_frame():
    a = np.zeros((3, 2, 2, 3), np.uint8)
    b = np.stack([np.full((2, 2, 3), i, np.uint8) for i in (1, 2)])
    out = tile([[a, b]], pad=1, pad_value=255)
    assert out.shape == (3, 2, 5, 3)
    assert (out[:, :, 2] == 255).all()
    assert out[2, 0, 3, 0] == 2  # b held its last frame
    with pytest.raises(VideoError, match="share"):
        tile([[a, np.zeros((3, 4, 4, 3), np.uint8)]])
