"""The demo page: a Gradio Blocks page wired to handlers.py, and the server that serves it. Uploads reach the
handlers through two image components whose decoding is this project's (handlers.read_upload: a pixel limit before
decoding, one sentence for a file that is not an image), on top of the server's limit on a file's size; the page
reads no path a visitor could type and serves no folder.
"""

from __future__ import annotations

import base64
import functools
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..autoencoders import image_shape
from ..bounds import MAX_REQUEST_GUIDANCE, MAX_REQUEST_SAMPLING_STEPS, MAX_SEED
from ..errors import UserError
from ..pipeline import Model, sampling_settings
from . import handlers, limits
from .limits import MAX_PIXELS, MAX_UPLOAD_MB, import_gradio

ENTER_SCALE = 8  # a test image is put into the image boxes at 8x its size (224x224), large enough to draw on
ON_MODEL = {"concurrency_limit": 1, "concurrency_id": "model"}  # one computation at a time: the CPU is shared


def upload_bytes(file, max_bytes: int) -> bytes:
    """The bytes of an upload as Gradio hands it over: a file it stored (checked to be in its upload folder by
    Gradio before this is called), a data: URL, or raw bytes; a file over `max_bytes` is refused unread."""
    too_large = UserError(f"the upload is larger than the {max_bytes / 2**20:g} MB this page takes; choose a smaller "
                          "image.")
    if isinstance(file, (bytes, bytearray, memoryview)):
        data = bytes(file)
    elif getattr(file, "url", None) and str(file.url).startswith("data:"):
        encoded = str(file.url).partition(",")[2]
        if len(encoded) > max_bytes * 4 // 3 + 4:
            raise too_large
        try:
            data = base64.b64decode(encoded, validate=False)
        except ValueError:
            raise UserError(handlers.NOT_AN_IMAGE) from None
    elif getattr(file, "path", None):
        if Path(file.path).stat().st_size > max_bytes:
            raise too_large
        data = Path(file.path).read_bytes()
    else:
        raise UserError("the upload holds no file; choose an image file.")
    if len(data) > max_bytes:
        raise too_large
    return data


def logged(error):
    """A refusal (gr.Error, ours or one Gradio raised itself, such as a number below a box's minimum): one line in
    the server's log, and the sentence for the visitor, no traceback."""
    if not getattr(error, "logged", False):
        print(f"refused: {error.message}", file=sys.stderr, flush=True)
        error.logged, error.print_exception = True, False
    return error


def refused(gr, message: str):
    return logged(gr.Error(message))


def shown(gr, fn):
    """A handler whose UserError reaches the page as its message (gr.Error), never as a traceback."""
    @functools.wraps(fn)
    def run(*args):
        try:
            return fn(*args)
        except UserError as err:
            raise refused(gr, str(err)) from None
    return run


def refuse_bad_requests(gr, page) -> None:
    """Requests Gradio refuses before a handler runs (a path on the server as a file, too few values, text for a
    number) reach the visitor as a sentence and the log as one line, instead of {"error": null} and a traceback.
    Each input box's own refusal names the box; what is left is refused as a whole request."""
    for block in page.blocks.values():
        if isinstance(block, gr.components.Component) and "preprocess" not in vars(block):
            block.preprocess = _named_refusals(gr, block, block.preprocess)
    preprocess_data = page.preprocess_data

    async def checked(block_fn, inputs, *args, **kwargs):
        try:
            return await preprocess_data(block_fn, inputs, *args, **kwargs)
        except gr.Error as err:
            raise logged(err) from None
        except Exception as err:
            if isinstance(err, gr.exceptions.InvalidPathError):
                message = "this page takes uploaded files only, not a path on the server."
            elif len(inputs or ()) < len(block_fn.inputs):
                message = (f"this request gives {len(inputs or ())} of the {len(block_fn.inputs)} values this "
                           "action takes; send one for each input.")
            else:
                message = (f"this request could not be read ({type(err).__name__}); send the values the page's API "
                           "lists.")
            raise refused(gr, message) from None
    page.preprocess_data = checked


def _named_refusals(gr, box, preprocess):
    def run(payload):
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise logged(err) from None
        except Exception:
            shown_value = repr(payload) if len(repr(payload)) <= 40 else repr(payload)[:40] + "..."
            raise refused(gr, f"the {box.label or 'value'} cannot be {shown_value}; give a value of the kind that "
                          "box takes.") from None
    return run


def checked_components(gr, max_pixels: int, max_bytes: int):
    """Makers of gr.Image and gr.ImageEditor boxes whose uploads are decoded by handlers.read_upload instead of by
    Gradio (which opens any file Pillow knows, at any size), and which take no web address (Gradio would fetch it).

    The methods are replaced on each box, not in a subclass: Gradio writes a .pyi file beside the source of every
    component class it sees defined, which would be a write into the installed package."""
    decode = shown(gr, lambda file: handlers.read_upload(upload_bytes(file, max_bytes), max_pixels))

    def local_only(box):
        fetch = box.async_move_resource_to_block_cache

        async def move(url_or_file_path):
            if str(url_or_file_path or "").lower().startswith(("http:", "https:", "ftp:", "//")):
                raise refused(gr, "this page takes uploaded image files only, not web addresses.")
            return await fetch(url_or_file_path)
        box.async_move_resource_to_block_cache = move
        return box

    def upload_image(**options):
        box = gr.Image(**options)
        box.preprocess = lambda payload: None if payload is None else decode(payload)
        return local_only(box)

    def draw_image(**options):
        box = gr.ImageEditor(**options)

        def convert(file, flatten_on_white: bool = False):
            if file is None:
                return None
            image = decode(file)
            return image if flatten_on_white else image.convert("RGBA")  # a drawing layer: its alpha is the mask
        box.convert_and_format_image = convert
        return local_only(box)

    return upload_image, draw_image


def describe(model: Model) -> str:
    kind = f"{model.num_classes} classes ({', '.join(model.class_names)})" if model.num_classes else "unconditional"
    shape = "x".join(map(str, image_shape(model.config)))
    name = Path(*model.source.parts[-2:])
    return f"**Model:** `{name}`, {shape} images, {kind}, T = {model.diffusion.num_timesteps}."


@dataclass(frozen=True)
class PageParts:
    """What every tab is built from: gradio, the model, the shared sampling settings (class, sampler, steps,
    guidance, seed: the inputs every handler takes), the test images and the checked upload components."""
    gr: object
    model: Model
    settings: list
    test_images: list
    test_names: list
    test_note: str
    upload_image: object
    draw_image: object
    max_pixels: int

    def entered(self, name: str) -> np.ndarray:
        """Test image `name` as an image box shows it: H x W (x 3), enlarged ENTER_SCALE times."""
        array = self.test_images[self.test_names.index(name)].permute(1, 2, 0).numpy()
        array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
        return np.asarray(Image.fromarray(array).resize((array.shape[1] * ENTER_SCALE, array.shape[0] * ENTER_SCALE),
                                                        Image.NEAREST))


def build_page(model: Model, data_dir: str | None = None, max_pixels: int = MAX_PIXELS,
               max_upload_mb: float = MAX_UPLOAD_MB):
    """The page: shared sampling settings above six tabs, each wired to its handler."""
    gr = import_gradio()
    upload_image, draw_image = checked_components(gr, max_pixels, int(max_upload_mb * 2**20))
    test_images = handlers.test_images(model, data_dir)
    sampler0, steps0, guidance0 = sampling_settings(model)  # the command line's defaults
    T, conditional = model.diffusion.num_timesteps, bool(model.num_classes)

    # Gradio deletes what the page stored every KEEP_SECONDS, as limits.sweep does before each request (and all of
    # it on exit).
    with gr.Blocks(title="tinydiffusion demo", analytics_enabled=False,
                   delete_cache=(limits.KEEP_SECONDS, limits.KEEP_SECONDS)) as page:
        gr.Markdown(f"# tinydiffusion demo\n{describe(model)}")
        with gr.Accordion("Sampling settings (every tab)", open=True):
            with gr.Row():
                class_name = gr.Dropdown([handlers.EVERY_CLASS, *model.class_names], value=handlers.EVERY_CLASS,
                                         label="class", visible=conditional, elem_id="class")
                sampler = gr.Dropdown(handlers.sampler_choices(model), value=sampler0, label="sampler",
                                      elem_id="sampler")
                top = MAX_REQUEST_SAMPLING_STEPS
                steps = gr.Slider(1, min(top, T), value=min(steps0, top), step=1, label="steps", elem_id="steps")
                guidance = gr.Slider(0, MAX_REQUEST_GUIDANCE, value=guidance0, step=0.1, label="guidance",
                                     visible=conditional, elem_id="guidance")
                seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="seed", elem_id="seed")
        sampler.change(shown(gr, lambda name: min(sampling_settings(model, name)[1], top)), sampler, steps,
                       api_name="steps")  # the sampler's own default steps
        parts = PageParts(gr, model, [class_name, sampler, steps, guidance, seed], *test_images, upload_image,
                          draw_image, max_pixels)
        with gr.Tabs():
            for title, tab_id, build_tab in TABS:
                with gr.Tab(title, id=tab_id):
                    build_tab(parts)
    refuse_bad_requests(gr, page)
    return page


def _generate_tab(parts: PageParts) -> None:
    gr, model, settings = parts.gr, parts.model, parts.settings
    num = gr.Slider(1, handlers.MAX_IMAGES, value=16, step=1, label="images", elem_id="num")
    go = gr.Button("Generate", variant="primary", elem_id="generate")
    grid = gr.Image(label="samples", format="png", interactive=False, elem_id="grid")
    status = gr.Markdown(elem_id="status")
    draw = shown(gr, lambda *a: handlers.generate_grid(model, *a))
    go.click(draw, [num, *settings], [grid, status], api_name="generate", **ON_MODEL)
    if handlers.redraws_live(model):  # a 1- or 2-step student: the grid follows the settings as they change
        gr.Markdown("This model draws in one or two network evaluations: the grid redraws as the class, guidance, "
                    "seed or number of images changes.", elem_id="live")
        class_name, _, _, guidance, seed = settings
        gr.on([num.change, class_name.change, guidance.change, seed.change], draw, [num, *settings], [grid, status],
              trigger_mode="always_last", api_name=False, **ON_MODEL)


def _reverse_tab(parts: PageParts) -> None:
    gr, model = parts.gr, parts.model
    gr.Markdown("Each frame is one sampler step: the noisy image x_t (top rows) over the model's "
                "current guess of the clean image (bottom rows).")
    with gr.Row():
        reverse_num = gr.Slider(1, 16, value=8, step=1, label="images")
        record = gr.Button("Run the reverse process", variant="primary", elem_id="record")
        play = gr.Button("Play", elem_id="play")
    frames = gr.State(None)
    frame = gr.Slider(1, max(2, sampling_settings(model)[1]), value=1, step=1, label="step", elem_id="frame")
    frame_image = gr.Image(label="x_t and predicted x_0", format="png", interactive=False)
    timer = gr.Timer(0.15, active=False)

    def recorded(*args):
        sequence = handlers.reverse_process(model, *args)
        last = len(sequence)
        return sequence, gr.Slider(maximum=max(2, last), value=last), handlers.frame_at(sequence, last)

    record.click(shown(gr, recorded), [reverse_num, *parts.settings], [frames, frame, frame_image],
                 api_name="reverse", **ON_MODEL)
    frame.change(shown(gr, handlers.frame_at), [frames, frame], frame_image, trigger_mode="always_last",
                 show_progress="hidden")

    def advance(sequence, index):
        going = sequence is not None and index < len(sequence)
        return gr.Timer(active=going), index + going

    play.click(lambda sequence: (gr.Timer(active=sequence is not None), 1), frames, [timer, frame])
    timer.tick(advance, [frames, frame], [timer, frame], show_progress="hidden")


def _forward_tab(parts: PageParts) -> None:
    gr, model, images = parts.gr, parts.model, parts.test_images
    gr.Markdown(f"The forward process q(x_t | x_0) on {parts.test_note}.")
    step = gr.Slider(0, model.diffusion.num_timesteps, value=0, step=1, label="step t", elem_id="forward-step")
    first, caption = handlers.forward_process(model, images, 0)
    noised = gr.Image(value=first, label="x_t", format="png", interactive=False, elem_id="forward")
    noised_caption = gr.Markdown(caption)
    step.change(shown(gr, lambda t: handlers.forward_process(model, images, t)), step, [noised, noised_caption],
                trigger_mode="always_last", api_name="forward", show_progress="hidden")


def _inpaint_tab(parts: PageParts) -> None:
    gr, model, names = parts.gr, parts.model, parts.test_names
    gr.Markdown("Upload an image or take a test image, draw over what to regenerate (or pick a built-in "
                "mask), and inpaint: the rest of the image is kept. The result shows the image as the "
                "model sees it, the mask in grey, then the inpaintings.")
    with gr.Row():
        editor = parts.draw_image(label="image: draw over the part to regenerate", type="pil",
                                  sources=["upload", "clipboard"], transforms=(), layers=False,
                                  brush=gr.Brush(colors=["#ff0000"], color_mode="fixed"), canvas_size=(224, 224),
                                  elem_id="inpaint-image")
        with gr.Column():
            inpaint_pick = gr.Dropdown(names, value=names[0], label="test image")
            inpaint_take = gr.Button("Use this test image")
            mask_name = gr.Radio(["drawn", *handlers.editing.MASKS], value="drawn", label="mask")
            inpaint_num = gr.Slider(1, 16, value=4, step=1, label="inpaintings")
            inpaint_go = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
    inpainted = gr.Image(label="image, mask, inpaintings", format="png", interactive=False)

    def take_for_editor(name):
        picture = parts.entered(name)
        return {"background": picture, "layers": [], "composite": picture}

    def inpainting(value, mask_choice, *args):
        value = value or {}
        return handlers.inpaint_tab(model, value.get("background"), handlers.drawn_mask(value.get("layers")),
                                    mask_choice, *args, max_pixels=parts.max_pixels)

    inpaint_take.click(take_for_editor, inpaint_pick, editor)
    inpaint_go.click(shown(gr, inpainting), [editor, mask_name, inpaint_num, *parts.settings], inpainted,
                     api_name="inpaint", **ON_MODEL)


def _img2img_tab(parts: PageParts) -> None:
    gr, model, names = parts.gr, parts.model, parts.test_names
    gr.Markdown("Noise an image part of the way (strength 0 keeps it, 1 is pure noise) and sample back "
                "from there, towards the chosen class.")
    with gr.Row():
        source = parts.upload_image(label="image", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                    format="png", elem_id="img2img-image")
        with gr.Column():
            img2img_pick = gr.Dropdown(names, value=names[0], label="test image")
            img2img_take = gr.Button("Use this test image")
            strength = gr.Slider(0, 1, value=0.6, step=0.05, label="strength", elem_id="strength")
            img2img_num = gr.Slider(1, 16, value=4, step=1, label="results")
            img2img_go = gr.Button("Run", variant="primary", elem_id="img2img")
    transformed = gr.Image(label="image, results", format="png", interactive=False)
    img2img_take.click(parts.entered, img2img_pick, source)
    img2img_go.click(shown(gr, lambda *a: handlers.img2img_tab(model, *a, max_pixels=parts.max_pixels)),
                     [source, strength, img2img_num, *parts.settings], transformed, api_name="img2img", **ON_MODEL)


def _interpolate_tab(parts: PageParts) -> None:
    gr, model, conditional = parts.gr, parts.model, bool(parts.model.num_classes)
    gr.Markdown("Samples along a path between two starting noises (two seeds)"
                + (" and two classes" if conditional else "") + "; the slider moves along it.")
    with gr.Row():
        names = list(model.class_names) or [handlers.EVERY_CLASS]
        class_a = gr.Dropdown(names, value=names[0], label="first class", visible=conditional)
        class_b = gr.Dropdown(names, value=names[-1], label="second class", visible=conditional)
        seed_a = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="first seed")
        seed_b = gr.Number(1, precision=0, minimum=0, maximum=MAX_SEED, label="second seed")
        count = gr.Slider(2, handlers.MAX_FRAMES, value=8, step=1, label="frames")
    interpolate_go = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
    strip = gr.Image(label="the path", format="png", interactive=False)
    path_frames = gr.State(None)
    position = gr.Slider(0, 1, value=0, step=0.01, label="position", elem_id="position")
    at = gr.Image(label="at the slider's position", format="png", interactive=False)

    def interpolation(*args):
        whole, each = handlers.interpolate_tab(model, *args)
        return whole, each, handlers.frame_along(each, 0), 0

    sampler_steps_guidance = parts.settings[1:4]
    interpolate_go.click(shown(gr, interpolation), [class_a, class_b, seed_a, seed_b, count, *sampler_steps_guidance],
                         [strip, path_frames, at, position], api_name="interpolate", **ON_MODEL)
    position.change(shown(gr, handlers.frame_along), [path_frames, position], at,
                    trigger_mode="always_last", show_progress="hidden")


TABS = [("Generate", "generate-tab", _generate_tab), ("Reverse process", "reverse-tab", _reverse_tab),
        ("Forward process", "forward-tab", _forward_tab), ("Inpaint", "inpaint-tab", _inpaint_tab),
        ("Image to image", "img2img-tab", _img2img_tab), ("Interpolate", "interpolate-tab", _interpolate_tab)]


def serve(model: Model, host: str = "127.0.0.1", port: int = 7860, data_dir: str | None = None,
          max_upload_mb: float = MAX_UPLOAD_MB, max_pixels: int = MAX_PIXELS) -> None:
    """Build the page and serve it until Ctrl-C (or SIGTERM, under demo.run_demo)."""
    page = build_page(model, data_dir, max_pixels, max_upload_mb)
    page.queue(default_concurrency_limit=1)
    queue = getattr(page, "_queue", None)
    if hasattr(queue, "sleep_when_free"):
        # Gradio's queue wakes every millisecond to look for work (9% of a core while idle), which also preempts
        # torch's threads on a 2-core CPU; every 50 ms is still at once for a person (measured in docs/demo.md).
        queue.sleep_when_free = 0.05
        queue.progress_update_sleep_when_free = 0.1
    from starlette.middleware import Middleware

    max_file = int(max_upload_mb * 2**20)
    folder = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")  # where Gradio stores
    # A request carries one file of the largest size, as base64 in a data: URL (4/3 larger), and the rest of the form.
    storage = Middleware(limits.StorageLimit, folder=folder, request_bytes=max_file * 4 // 3 + 64 * 1024,
                         total_bytes=limits.STORED_FILES * max_file)
    try:
        page.launch(server_name=host, server_port=port, max_file_size=max_file, share=False,
                    inbrowser=False, show_error=False, ssr_mode=False, quiet=True, prevent_thread_lock=True,
                    app_kwargs={"middleware": [storage]})
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port} ({err}); choose another --port or --host.") from None
    shown_host = f"[{host}]" if ":" in host else host
    print(f"the demo page is at http://{shown_host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        while page.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopped.", flush=True)
    finally:
        page.close()

