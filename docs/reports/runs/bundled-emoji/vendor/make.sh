# The vendor-transfer measurement of docs/reports/bundled-emoji.md: a prior trained on Noto (google-*) emoji only,
# fine-tuned on Twemoji (twitter-*), against Twemoji trained from scratch. From the repository's root with the
# package installed; a 2-core AMD EPYC with AVX2 only (no AVX-512), torch 2.13 CPU. Nothing else ran beside the
# pairs (each pair shares the two cores, one thread each); the prior ran beside edits and unit tests (a fixed
# number of steps, so the load changed its time, not its result).
set -e
D=../shared/data/emoji
OUT=docs/reports/runs/bundled-emoji/vendor

# 1. One vendor's folders (train/ and test/ with category sub-folders): 3,413 train and 368 test images each.
python benchmarks/vendor_folder.py $D google runs/emoji-google
python benchmarks/vendor_folder.py $D twitter runs/emoji-twitter

# 2. The prior: the colour-32 recipe the command chooses, on Noto only, 6,000 steps (~60 minutes on this CPU).
tinydiffusion train --data runs/emoji-google/train --data.image_size 32 --max-steps 6000 --train.threads 2 \
  --checkpoint-every 500 --no-progress --run-dir runs/google-prior-32 > runs/google-prior-32.log 2>&1

# 3. Twemoji from scratch and from the Noto prior, side by side, one thread each.
pair () {  # SIZE MINUTES
  common="--data runs/emoji-twitter/train --data.image_size $1 --train.minutes $2 --train.threads 1 --no-progress"
  tinydiffusion train $common --run-dir runs/twitter$1-scratch-$2m > runs/twitter$1-scratch-$2m.log 2>&1 &
  tinydiffusion train $common --train.init runs/google-prior-32 --run-dir runs/twitter$1-tuned-$2m \
    > runs/twitter$1-tuned-$2m.log 2>&1
  wait
}
pair 32 15; pair 64 15; pair 32 5; pair 32 30

# 4. Scores against Twemoji's own test split, N = 1,000, seed 0 (the defaults: DPM-Solver++(2M), 20 steps,
#    guidance 1.5), and the table.
mkdir -p $OUT/pixel-prior
for run in runs/twitter*-*m; do
  dest=$OUT; case $run in *twitter64*) dest=$OUT/pixel-prior;; esac  # the 64-px pair: scored a session later
  tinydiffusion evaluate $run --num 1000 --json $dest/$(basename $run).json
  cp $run.log $dest/
done
python benchmarks/transfer_table.py $OUT/twitter --init runs/google-prior-32

# 5. At 64 px a run chosen for the data diffuses in TAEF2's latents, so the head start there is a latent prior: the
#    recipe the command chooses at 64 px, on Noto only, 5,000 steps (48 minutes on this CPU). A fine-tune of
#    it diffuses in its latents too. Then the three pairs, side by side as above, and their scores.
tinydiffusion train --data runs/emoji-google/train --data.image_size 64 --max-steps 5000 --train.threads 2 \
  --checkpoint-every 500 --no-progress --run-dir runs/google-prior-64 > runs/google-prior-64.log 2>&1
mkdir -p $OUT/latent-prior
latent_pair () {  # MINUTES
  common="--data runs/emoji-twitter/train --data.image_size 64 --train.minutes $1 --train.threads 1 --no-progress"
  tinydiffusion train $common --run-dir runs/latent-prior/twitter64-scratch-$1m \
    > runs/latent-prior/twitter64-scratch-$1m.log 2>&1 &
  tinydiffusion train $common --train.init runs/google-prior-64 --run-dir runs/latent-prior/twitter64-tuned-$1m \
    > runs/latent-prior/twitter64-tuned-$1m.log 2>&1
  wait
}
mkdir -p runs/latent-prior
latent_pair 5; latent_pair 15; latent_pair 30
for run in runs/latent-prior/twitter64-*m; do
  tinydiffusion evaluate $run --num 1000 --json $OUT/latent-prior/$(basename $run).json
  cp $run.log $OUT/latent-prior/
done
cp runs/google-prior-64.log $OUT/

# 6. The ceiling: the real held-out images scored as samples, at each size; the tables with it; the figures.
for size in 32 64; do
  python benchmarks/real_scores.py runs/emoji-twitter/test --data runs/emoji-twitter/train --size $size \
    --json $OUT/real/twitter-test-$size.json
done
python benchmarks/transfer_table.py $OUT/twitter --init runs/google-prior-32 --real $OUT/real/twitter-test-32.json
python benchmarks/transfer_table.py $OUT/latent-prior/twitter --init runs/google-prior-64 \
  --real $OUT/real/twitter-test-64.json
python benchmarks/transfer_table.py $OUT/pixel-prior/twitter --init runs/google-prior-32 \
  --real $OUT/real/twitter-test-64.json
for m in 15 30; do
  python benchmarks/colour_figures.py runs/latent-prior/twitter64-scratch-${m}m runs/latent-prior/twitter64-tuned-${m}m \
    docs/figures/vendor-transfer-64-latent-$m.png --labels "scratch,from the Noto prior" --rows 3
done

# 7. The fine-tune's warm-up and EMA at 32 px: the Noto prior fine-tuned on Twemoji with the recipe's warm-up and
#    EMA (200 steps, shortened to fit; power EMA of width 0.1) against no warm-up, and EMA widths 0.05 and 0.2.
mkdir -p runs/fine-tune $OUT/fine-tune
ft () {  # NAME MINUTES FLAGS...
  name=$1 minutes=$2; shift 2
  tinydiffusion train --data runs/emoji-twitter/train --data.image_size 32 --train.minutes $minutes --train.threads 1 \
    --no-progress --train.init runs/google-prior-32 --run-dir runs/fine-tune/twitter32-tuned$name-${minutes}m "$@" \
    > runs/fine-tune/twitter32-tuned$name-${minutes}m.log 2>&1
}
ft "" 5 & ft -warmup0 5 --train.warmup_steps 0; wait
ft -ema0.05 5 --train.ema_std 0.05 & ft -ema0.2 5 --train.ema_std 0.2; wait
for run in runs/fine-tune/twitter32-tuned*-5m; do
  tinydiffusion evaluate $run --num 1000 --json $OUT/fine-tune/$(basename $run).json
  cp $run.log $OUT/fine-tune/
done
python benchmarks/transfer_table.py $OUT/fine-tune/twitter --init runs/google-prior-32
