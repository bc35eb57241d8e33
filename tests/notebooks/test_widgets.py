"""``ferlib.widgets``: notebook 11's upload widget classifies an uploaded photo and reports a failure in its status."""
from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
from PIL import Image

from ferlib.inference import FacePrediction, PhotoPrediction

pytest.importorskip("ipywidgets")
from ferlib.widgets import upload_widget  # noqa: E402


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="JPEG")
    return buf.getvalue()


class FakePredictor:
    """One face, 'happy' at 0.75, on every photo; records the photos' sizes. A grey photo raises."""

    def __init__(self):
        self.seen = []

    def __call__(self, image):
        arr = np.asarray(image)
        if arr[0, 0, 0] == arr[0, 0, 1] == arr[0, 0, 2]:
            raise ValueError("grey")
        self.seen.append(arr.shape)
        face = FacePrediction((1.0, 2.0, 20.0, 25.0), np.zeros((5, 2)), 0.99, {"happy": 0.75, "sad": 0.25},
                              np.zeros((8, 8, 3), np.uint8))
        return PhotoPrediction(arr, [face], ["happy", "sad"])


def _upload(box, name, content):
    upload = box.children[0]
    upload.value = ({"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
                     "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def test_an_uploaded_photo_is_classified_and_a_failure_is_shown():
    predictor = FakePredictor()
    box = upload_widget(predictor)
    upload, status, photo_out, bars_out = box.children
    assert type(upload).__name__ == "FileUpload" and status.value == "Choose a photo with one or more faces."
    _upload(box, "me.jpg", _jpeg((200, 40, 10)))
    assert predictor.seen == [(30, 40, 3)]
    assert status.value == "<b>me.jpg</b>: 1 face(s): happy 75%"
    _upload(box, "grey.jpg", _jpeg((90, 90, 90)))
    assert status.value == "<b>grey.jpg</b>: cannot classify it (ValueError: grey)"
