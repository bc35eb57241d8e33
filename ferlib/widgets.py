"""Widgets the notebooks show (ipywidgets): notebook 11's photo upload, each photo classified by a
:class:`ferlib.inference.Predictor`."""
from __future__ import annotations

from ferlib.inference import Predictor, draw_predictions, plot_probabilities


def upload_widget(predictor: Predictor):
    """An ipywidgets box: a FileUpload button; each uploaded photo is classified and shown annotated, with the
    probability bars of every face. Returns the widget (display it as a cell's last expression)."""
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display
    from PIL import Image

    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
    status = widgets.HTML("Choose a photo with one or more faces.")
    photo_out, bars_out = widgets.Output(), widgets.Output()
    photo_out.add_class("ferlib-photo")
    bars_out.add_class("ferlib-bars")

    def on_upload(change):
        files = change["new"]
        if not files:
            return
        f = files[-1] if isinstance(files, (list, tuple)) else list(files.values())[-1]
        name = f.get("name", "upload") if hasattr(f, "get") else getattr(f, "name", "upload")
        content = f["content"] if hasattr(f, "__getitem__") else f.content
        photo_out.clear_output()
        bars_out.clear_output()
        try:
            res = predictor(Image.open(io.BytesIO(bytes(content))))
        except Exception as e:  # noqa: BLE001 - shown to the person who uploaded, not raised in a callback
            status.value = f"<b>{name}</b>: cannot classify it ({type(e).__name__}: {e})"
            return
        res.path = name
        faces = ", ".join(f"{x.label} {x.confidence:.0%}" for x in res) or "no face found"
        status.value = f"<b>{name}</b>: {len(res)} face(s): {faces}"
        for out, fig in ((photo_out, draw_predictions(res)), (bars_out, plot_probabilities(res))):
            with out:
                display(fig)
            plt.close(fig)

    upload.observe(on_upload, names="value")
    return widgets.VBox([upload, status, photo_out, bars_out])
