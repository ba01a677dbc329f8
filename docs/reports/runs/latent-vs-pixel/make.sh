#!/bin/sh
# Pixel space against latent diffusion through TAEF2 on emoji (issue 46). From the repository root.
# Each pair trains one run after the other with nothing else running (time_to_quality.py --train-only); then every
# final checkpoint is scored (N = 1,000, DPM-Solver++(2M) 20 steps, guidance 1.5, seed 0) against the data the
# run recorded (its test split beside it is the reference), and the decoder's ceiling beside it.
set -e
# The emoji files are 64x64: the 128-px runs train on a copy upscaled 2x (Lanczos), which adds no detail.
python benchmarks/upscaled_folder.py ../shared/data/emoji runs/emoji-128 --factor 2
# The latent route's network, written out (train chooses the same for --autoencoder without a preset).
LATENT="--autoencoder taef2 --net.stem_patch 1 --net.base_channels 64 --net.channel_mults 1,2,2 \
  --net.attention_levels 1,2 --train.batch_size 64 --train.ema_std 0.1 --train.decay_from 0.8"
pair() {  # SIZE MINUTES DATA [--train-only]
  python benchmarks/time_to_quality.py --preset auto --data $3 $4 \
    --common "--data.image_size $1 --train.minutes $2" --every 100000 --guidance 1.5 --num ${NUM:-1000} --target 20 \
    --out-dir runs/lvp/px$1-${2}min --markdown runs/lvp/px$1-${2}min.md --run "pixel: --autoencoder none" --run "latent: $LATENT"
}
# Trained in this order. Until the 30-minute pair the pixel runs were
# train's default, written "pixel:" then; --autoencoder none chooses the same now that latents are the default.
for M in 15 5; do pair 64 $M ../shared/data/emoji/train --train-only; done
pair 128 15 runs/emoji-128/train --train-only
pair 64 30 ../shared/data/emoji/train --train-only
pair 128 5 runs/emoji-128/train --train-only
NUM=500 pair 128 30 runs/emoji-128/train --train-only
# Scored afterwards (the same commands without --train-only reuse the finished runs).
for M in 5 15; do pair 64 $M ../shared/data/emoji/train; done
# The decoder's ceiling: 1,000 training images through encode and decode, scored as samples.
for S in "64 ../shared/data/emoji/train 1000" "128 runs/emoji-128/train 500"; do
  set -- $S
  python benchmarks/latent_ceiling.py --data $2 --size $1 --num 1000 --out runs/lvp/ceiling-$1.npz
  tinydiffusion evaluate --samples runs/lvp/ceiling-$1.npz --data $2 --data.image_size $1 --num $3 \
    --json runs/lvp/ceiling-$1.json
done
NUM=500 pair 128 15 runs/emoji-128/train   # N = 500 at 128 px: sampling the pixel UNet there is slow
pair 64 30 ../shared/data/emoji/train
NUM=500 pair 128 5 runs/emoji-128/train
NUM=500 pair 128 30 runs/emoji-128/train
python benchmarks/latent_table.py runs/lvp
python benchmarks/colour_figures.py runs/lvp/px64-15min/pixel runs/lvp/px64-15min/latent \
  docs/figures/latent-vs-pixel-64.png --labels "pixel,latent" --rows 2 --scale 1
python benchmarks/colour_figures.py runs/lvp/px128-15min/pixel runs/lvp/px128-15min/latent \
  docs/figures/latent-vs-pixel-128.png --labels "pixel,latent" --rows 2 --scale 1
python benchmarks/colour_figures.py runs/lvp/px64-30min/pixel runs/lvp/px64-30min/latent \
  docs/figures/latent-vs-pixel-64-30.png --labels "pixel,latent" --rows 2 --scale 1
python benchmarks/colour_figures.py runs/lvp/px128-30min/pixel runs/lvp/px128-30min/latent \
  docs/figures/latent-vs-pixel-128-30.png --labels "pixel,latent" --rows 2 --scale 1
# The by-eye count at 64 px, 15 minutes: eight samples of each category of each run, another seed
python benchmarks/colour_figures.py runs/lvp/px64-15min/pixel runs/lvp/px64-15min/latent \
  docs/figures/latent-vs-pixel-64-15-by-eye.png --labels "pixel,latent" --rows 8 --seed 1 --scale 1
# Colour images that are not emoji: the icon folder of benchmarks/icon_folder.py (its docstring builds it), 5 minutes
for T in --train-only ""; do
  python benchmarks/time_to_quality.py --preset auto --data runs/icons/train $T \
    --common "--data.image_size 64 --train.minutes 5" --every 100000 --guidance 1.5 --num 1000 --target 20 \
    --out-dir runs/lvp/icons64-5min --markdown runs/lvp/icons64-5min.md --run "pixel: --autoencoder none" \
    --run "latent: $LATENT"
done
