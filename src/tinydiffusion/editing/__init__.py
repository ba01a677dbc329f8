"""Editing with a trained model, beside generate(): inpainting (RePaint), image-to-image (SDEdit), DDIM inversion
and interpolation. Each takes an image as uint8 [C, H, W] in the model's shape (fit_image makes one from any
picture) and generate()'s options: sampler, steps, guidance, seed and the sampler's own options.

    model = load_model()
    shirt = fit_image(model, Image.open("shirt.png"))
    dresses = img2img(model, shirt, strength=0.6, num=4, classes=[model.class_index("dress")])
"""

from .images import MASKS, builtin_mask, fit_image, fit_mask, read_picture, to_picture_size
from .img2img import img2img
from .inpaint import inpaint, inpaint_picture
from .interpolate import interpolate

__all__ = ["MASKS", "builtin_mask", "fit_image", "fit_mask", "img2img", "inpaint", "inpaint_picture", "interpolate",
           "read_picture", "to_picture_size"]
