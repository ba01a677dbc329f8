. .venv/bin/activate
# guide: tinydiffusion train --data ../shared/data/emoji/train --data.image_size 32 --train.minutes 3 --run-dir runs/emoji-guide-3min
# the model, stopped at step 8,568: tinydiffusion train --data ../shared/data/emoji/train --data.image_size 32 --train.minutes 150 --run-dir runs/emoji-prior-32
M=runs/emoji-prior-32
G=runs/emoji-guide-3min
for spec in "cfg-1.5 --guidance 1.5" "ag-1.5 --guide $G --guidance 1.5" "ag-2.5 --guide $G --guidance 2.5" "cfg-2.5 --guidance 2.5"; do
  set -- $spec; name=$1; shift
  /usr/bin/time -f "$name %e s" tinydiffusion evaluate $M --num 1000 --json runs/ag/colour-$name.json "$@" > runs/ag/colour-$name.log 2>&1 || echo "$name failed" >> runs/ag/colour.err
done
