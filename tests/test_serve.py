"""``infosam serve``: upload checks, one encoding per image, the handlers, and the page in headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from browser import chromium, click_box, find_browser, served, settle, text, upload, wait_for, wait_for_masks
from infosam.data.synthetic import synthetic_pair
from infosam.predict import Prompt, predict_logits
from infosam.serve import (
    MODES,
    STUDENT,
    TEACHER,
    App,
    Clicks,
    Segmenter,
    UploadError,
    load_models,
    parse_box,
    read_upload,
)
from test_export import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("serve"), "adapter+decoder", {"adapter": {"init": "torch"}})


@pytest.fixture(scope="module")
def models(run):
    return load_models(run)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_pair(5, domain="target", size=(90, 120))[0]).save(path)
    return path


def test_read_upload_refuses_non_images_huge_images_and_empty_files(tmp_path, photo):
    assert read_upload(photo).shape == (90, 120, 3)
    text_file = tmp_path / "notes.png"
    text_file.write_text("not pixels")
    with pytest.raises(UploadError, match="notes.png is not an image PIL can read"):
        read_upload(text_file)
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1500)).save(big)
    with pytest.raises(UploadError, match=r"big.png is 2000 x 1500 pixels .* the limit is 1 MP"):
        read_upload(big, max_pixels=1_000_000)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(UploadError, match="empty.jpg is empty"):
        read_upload(empty)


def test_clicks_make_boxes_and_points():
    clicks = Clicks()
    assert clicks.prompt() is None
    clicks.add(50, 40, MODES[0])
    assert clicks.prompt() is None and clicks.corner == (50, 40)
    clicks.add(10, 60, MODES[0])  # any two opposite corners
    assert clicks.prompt() == Prompt(box=(10, 40, 50, 60))
    clicks.add(5, 6, MODES[1])
    clicks.add(7, 8, MODES[2])
    assert clicks.prompt() == Prompt(box=(10, 40, 50, 60), points=((5, 6), (7, 8)), labels=(1, 0))
    assert parse_box("1, 2 30 40") == (1, 2, 30, 40)
    with pytest.raises(ValueError, match="x0 < x1"):
        parse_box("30 2 1 40")


def test_segmenter_encodes_each_image_once_and_gives_each_models_masks(models, photo):
    segmenter = Segmenter(models)
    image = read_upload(photo)
    prompts = [
        Prompt(box=(10, 10, 80, 70)),
        Prompt(points=((40, 30),), labels=(1,)),
        Prompt(box=(0, 0, 120, 90)),
    ]
    for prompt in prompts:
        results = segmenter.segment(image, prompt)
        assert [r.name for r in results] == [STUDENT, TEACHER]
        for result in results:
            np.testing.assert_allclose(
                result.logits, predict_logits(models[result.name], image, prompt), atol=1e-6
            )
    assert segmenter.encoder_calls == 2  # one per model, not one per prompt
    segmenter.segment(image[::-1].copy(), prompts[0])
    assert segmenter.encoder_calls == 4


def test_app_reports_bad_uploads_and_keeps_working(models, photo, tmp_path):
    app = App(Segmenter(models), mask_dir=tmp_path / "masks")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but truncated")
    session, canvas, *_, status = app.upload(str(bad))
    assert session.image is None and canvas is None and "Upload refused" in status and "bad.png" in status
    session, canvas, *_ = app.click(session, 3, 4, MODES[0])
    session, canvas, *_ = app.upload(str(photo))
    assert session.scale == 4  # a 90 x 120 image is shown 4x larger; clicks come in displayed pixels
    assert canvas.shape == (360, 480, 3)
    session, canvas, *_, status = app.click(session, 40, 40, MODES[0])
    assert "opposite corner" in status and canvas.shape == (360, 480, 3)
    session, canvas, student_view, teacher_view, scores, mask_file, status = app.click(
        session, 320, 280, MODES[0]
    )
    assert status == "Done." and canvas.shape == student_view.shape == teacher_view.shape == (360, 480, 3)
    assert "predicted IoU" in scores and STUDENT in scores and TEACHER in scores
    expected = predict_logits(models[STUDENT], read_upload(photo), Prompt(box=(10, 10, 80, 70))) > 0
    assert np.array_equal(np.asarray(Image.open(mask_file)) > 0, expected)
    *_, status = app.set_box(session, "0 0 500 10")
    assert "Box refused" in status and "outside photo" in status


def test_page_in_headless_chromium(models, photo, tmp_path):
    """Upload, a two-click box, both masks shown; a bad upload first, to see the page survive it."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    if find_browser() is None:
        pytest.skip(
            "chromium/chromedriver not installed (make test installs them with apt-get where possible)"
        )
    from infosam.serve import build_app

    app = App(Segmenter(models), mask_dir=tmp_path / "masks")
    bad = tmp_path / "broken.png"
    bad.write_text("this is not an image")
    with served(build_app(app)) as url, chromium() as driver:
        upload(driver, url, bad)
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(lambda d: "Upload refused" in text(d, "status"))
        assert "broken.png is not an image PIL can read" in text(driver, "status")
        upload(driver, None, photo)
        WebDriverWait(driver, 30).until(lambda d: "90 pixels" in text(d, "status"))
        click_box(driver, ((0.15, 0.2), (0.75, 0.8)))
        wait_for_masks(driver, 2)
        scores = text(driver, "scores")
        assert f"{STUDENT}: predicted IoU" in scores and f"{TEACHER}: predicted IoU" in scores
        assert app.segmenter.encoder_calls == 2
        written = sorted((tmp_path / "masks").rglob("photo-mask.png"))
        assert len(written) == 1 and np.asarray(Image.open(written[0])).max() == 255
        settle()
        driver.save_screenshot(str(tmp_path / "serve.png"))
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_load_models_for_each_kind_of_source(run, tmp_path, capsys):
    from infosam.cli import main
    from infosam.export import export_run

    merged = export_run(make_run(tmp_path, "lora+decoder"), "sam", tmp_path / "merged.pth")
    assert list(load_models(merged)) == ["merged.pth"]  # a plain SAM file: that model alone
    assert list(load_models(model="tiny", checkpoint=merged)) == ["zero-shot tiny"]
    exported = export_run(run, "infosam", tmp_path / "student.safetensors")
    assert list(load_models(exported)) == [STUDENT, TEACHER]
    with pytest.raises(ValueError, match="not both"):
        load_models(run, model="tiny", checkpoint=merged)
    assert main(["serve"]) == 2
    assert "give a run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_upload_honours_exif_orientation_like_predict(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6: the page reads it upright, exactly as infosam
    predict's reader does (before, serve decoded the stored pixels and segmented the image sideways)."""
    import numpy as np
    from PIL import Image

    from infosam.data.reading import read_image
    from infosam.serve import read_upload

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # red band on the stored image's left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    uploaded = read_upload(path)
    expected, info = read_image(path)
    assert info.orientation == 6
    assert uploaded.shape == expected.shape == (40, 20, 3)  # upright: portrait
    assert np.array_equal(uploaded, expected)
    assert uploaded[:10, :, 0].mean() > 200 and uploaded[-10:, :, 0].mean() < 50  # the band is now on top


def test_serve_offers_share_and_passes_gradio_no_launch_hint(monkeypatch, tmp_path, capsys):
    """Issue 22, item 12: Gradio's "set share=True in launch()" hint named something the command could not do."""
    import gradio

    from infosam.cli import main
    from infosam.sam.build import build_sam

    calls = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: calls.append(kw))
    checkpoint = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny").state_dict(), checkpoint)
    for extra, share in (([], False), (["--share"], True)):
        assert main(["serve", "--model", "tiny", "--checkpoint", str(checkpoint), "--port", "0", *extra]) == 0
        assert calls[-1]["share"] is share and calls[-1]["quiet"] is True
    assert "a public link follows" in capsys.readouterr().out


def test_phone_photo_on_the_page_gives_predicts_mask(run, models, tmp_path):
    """A photo stored sideways with EXIF orientation 6, uploaded in the browser with a typed box: the mask the
    page offers for download is pixel for pixel the one `infosam predict` writes for the same file and box."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    if find_browser() is None:
        pytest.skip(
            "chromium/chromedriver not installed (make test installs them with apt-get where possible)"
        )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from infosam.cli import main
    from infosam.serve import build_app

    upright = synthetic_pair(5, domain="target", size=(90, 120))[0]
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # 120 x 90 on disk: portrait
    exif = stored.getexif()
    exif[0x0112] = 6  # a viewer turns it 90 degrees clockwise: landscape 90 x 120 again
    phone = tmp_path / "phone.jpg"
    stored.save(phone, exif=exif, quality=95)
    box = "10 10 80 70"  # in the upright image's pixels, as a user sees it
    app = App(Segmenter(models), mask_dir=tmp_path / "masks")
    with served(build_app(app)) as url, chromium() as driver:
        upload(driver, url, phone)
        wait_for(driver, lambda d: "90 pixels" in text(d, "status"))
        field = driver.find_element(By.CSS_SELECTOR, "#box-text textarea, #box-text input")
        field.send_keys(box + Keys.ENTER)
        wait_for_masks(driver, 2)
        wait_for(driver, lambda d: "Done." in text(d, "status"))
    page_masks = sorted((tmp_path / "masks").rglob("phone-mask.png"))
    assert len(page_masks) == 1
    assert main(["predict", str(run), str(phone), "--box", *box.split(), "--out", str(tmp_path / "cli")]) == 0
    cli_mask = np.asarray(Image.open(tmp_path / "cli" / "masks" / "phone.png"))
    page_mask = np.asarray(Image.open(page_masks[0]))
    assert page_mask.shape == cli_mask.shape == (90, 120)  # both upright
    assert (page_mask > 0).any() and np.array_equal(page_mask > 0, cli_mask > 0)


def test_page_with_real_mobilesam_in_headless_chromium(mobile_sam_weights, tmp_path):
    """The web page with zero-shot MobileSAM (real weights, 1024 px): a real photo, a two-click box, the mask
    shown and written (skipped without the weights, the photo or chromium)."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    if find_browser() is None:
        pytest.skip(
            "chromium/chromedriver not installed (make test installs them with apt-get where possible)"
        )
    from conftest import shared_data_root
    from infosam.serve import build_app

    photo = shared_data_root() / "ecssd" / "images" / "0001.jpg"
    if not photo.is_file():
        pytest.skip(f"real data not found at {photo}")
    models = load_models(model="mobile_sam", checkpoint=mobile_sam_weights)
    assert list(models) == ["zero-shot mobile_sam"]
    app = App(Segmenter(models), mask_dir=tmp_path / "masks")
    with served(build_app(app)) as url, chromium() as driver:
        upload(driver, url, photo)
        wait_for(driver, lambda d: "400 pixels" in text(d, "status"), 120)
        click_box(driver, ((0.15, 0.15), (0.9, 0.75)))
        wait_for_masks(driver, 1, timeout=120)
        assert "zero-shot mobile_sam: predicted IoU" in text(driver, "scores")
        written = sorted((tmp_path / "masks").rglob("0001-mask.png"))
        assert len(written) == 1
        mask = np.asarray(Image.open(written[0])) > 0
        assert 0.02 < mask.mean() < 0.98  # a real object, not an empty or full mask
