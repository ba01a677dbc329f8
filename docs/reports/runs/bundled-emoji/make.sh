# How the bundled emoji model, its student and the measurements of docs/reports/bundled-emoji.md were made, in
# order, from the repository's root with the package installed (a 2-core AMD EPYC with AVX-512, torch 2.13 CPU).
set -e
D=../shared/data/emoji

# 1. The model: 150 minutes (a time budget) on all of emoji/train at 32 px; it was stopped once and resumed with
#    --train.threads 2 (`tinydiffusion train --resume runs/emoji-prior-32 --train.threads 2`).
tinydiffusion train --data $D/train --data.image_size 32 --train.minutes 150 --train.threads 1 \
  --run-dir runs/emoji-prior-32
python tools/bundle_model.py runs/emoji-prior-32 emoji

# 2. A style it never saw: OpenMoji (CC BY-SA 4.0, from npm), from scratch and from the emoji model, side by
#    side, one thread each: 5, 15 and 30 minutes at 32 px, 15 minutes at 64 px.
npm pack openmoji@17.0.0
python benchmarks/openmoji_folder.py openmoji-17.0.0.tgz runs/openmoji
pair () {  # SIZE MINUTES
  common="--data runs/openmoji/train --data.image_size $1 --train.minutes $2 --train.threads 1 --no-progress"
  tinydiffusion train $common --run-dir runs/openmoji$1-scratch-$2m > runs/openmoji$1-scratch-$2m.log 2>&1 &
  tinydiffusion train $common --train.init emoji --run-dir runs/openmoji$1-tuned-$2m > runs/openmoji$1-tuned-$2m.log 2>&1
  wait
}
pair 32 15; pair 32 5; pair 64 15; pair 32 30
# ... and a fine-tune's learning rate: 1e-3 and 5e-4 against the recipe's 2e-3, 15 minutes at 32 px.
common="--data runs/openmoji/train --data.image_size 32 --train.minutes 15 --train.threads 1 --no-progress"
for lr in 5e-4 1e-3; do
  tinydiffusion train $common --train.init emoji --train.lr $lr --run-dir runs/openmoji32-tuned-lr$lr-15m \
    > runs/openmoji32-tuned-lr$lr-15m.log 2>&1 &
done
wait

# ... and colour images that are not emoji: five Iconify icon sets (MIT and CC0, from npm), one class each, from
#    scratch and from the emoji model, side by side, one thread each: 5 and 15 minutes at 32 px.
for s in cryptocurrency-color@1.2.4 devicon@1.2.68 flat-color-icons@1.2.3 logos@1.2.20 vscode-icons@1.2.99; do
  npm pack @iconify-json/$s
done
python benchmarks/icon_folder.py runs/icons iconify-json-*.tgz
pair_icons () {  # SIZE MINUTES
  common="--data runs/icons/train --data.image_size $1 --train.minutes $2 --train.threads 1 --no-progress"
  tinydiffusion train $common --run-dir runs/icons$1-scratch-$2m > runs/icons$1-scratch-$2m.log 2>&1 &
  tinydiffusion train $common --train.init emoji --run-dir runs/icons$1-tuned-$2m > runs/icons$1-tuned-$2m.log 2>&1
  wait
}
pair_icons 32 5; pair_icons 32 15

# 3. Its 4-step student: trajectory distillation for 12 minutes.
tinydiffusion distill --teacher emoji --data $D/train --steps 4 --train.max_seconds 720 --train.threads 2 \
  --checkpoint-every 100 --no-progress --run-dir runs/emoji-student-4
python tools/bundle_model.py runs/emoji-student-4 emoji-student --teacher emoji

# 4. Scores: the model, its student and the real test images per category; the eight OpenMoji runs; the README's grid.
python benchmarks/bundled_quality.py --model emoji --data $D/train --real $D/test --num 1000 \
  --json docs/reports/runs/bundled-emoji/quality.json
for run in runs/openmoji32-*m runs/openmoji64-*m runs/icons32-*m; do
  tinydiffusion evaluate $run --num 1000 --json docs/reports/runs/bundled-emoji/$(basename $run).json
done
tinydiffusion sample --model emoji --num 54 --out docs/figures/emoji-bundled.png
