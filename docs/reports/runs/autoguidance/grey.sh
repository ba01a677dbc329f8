. .venv/bin/activate
# the guide: tinydiffusion train --data-dir ../shared/data/fashion-mnist --epochs 1 --run-dir runs/fm-guide-1ep
G=runs/fm-guide-1ep
for spec in "cfg-1.5 --guidance 1.5" "cfg-2 --guidance 2" "ag-1.5 --guide $G --guidance 1.5" "ag-2 --guide $G --guidance 2" "ag-2.5 --guide $G --guidance 2.5" "ag-3 --guide $G --guidance 3" "cfg-1 --guidance 1"; do
  set -- $spec; name=$1; shift
  /usr/bin/time -f "$name %e s" tinydiffusion evaluate --num 1000 --data-dir ../shared/data/fashion-mnist --json runs/ag/grey-$name.json "$@" > runs/ag/grey-$name.log 2>&1 || echo "$name failed" >> runs/ag/grey.err
done
