// Sampling a tinydiffusion model in the browser: the page `tinydiffusion export --format web` writes
// (docs/reference/web-page.md). The model is model.onnx (the contract of docs/reference/onnx.md: inputs x, t, y
// and, for a distilled student, guidance; outputs x0 and eps) and model.json its metadata; onnxruntime-web runs it
// on one thread of WebAssembly. A latent model samples latents and decodes them once at the end with its decoder
// graph, the file metadata.latent.decoder names (z -> image). Every file is fetched with the SHA-256 index.html
// lists, so a changed file stops the page.
//
// The samplers are tinydiffusion's (src/tinydiffusion/samplers/), on the levels of its "trailing" spacing: DDIM
// with eta = 0, DPM-Solver++(2M) and multistep consistency sampling, whichever the metadata's `sampler` names.

import * as ort from "onnxruntime-web";

const WASM = "ort-wasm-simd-threaded.wasm";
const checked = JSON.parse(document.getElementById("integrity").textContent);
const $ = (id) => document.getElementById(id);

async function fetchChecked(name) {
  let response;
  try {
    response = await fetch(name, { integrity: checked[name] });
  } catch (err) {
    throw new Error(`${name} could not be loaded, or is not the file this page was exported with (${err.message})`);
  }
  if (!response.ok) throw new Error(`${name} could not be loaded (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

// --- the noise: counter-based, so image i of a seed is the same in any batch and any browser ----------------
// key = mix(mix(mix(seed) + i) + draw), all in uint32; u[n] = ((mix(key + n) >>> 8) + 0.5) / 2^24 in (0, 1);
// z[j] = sqrt(-2 ln u[2j]) cos(2 pi u[2j + 1]) (Box-Muller). draw 0 is the starting noise; the consistency
// sampler's step s (from 0) adds fresh noise of draw s + 1.

function mix(x) { // "lowbias32", Chris Wellons' 32-bit integer hash
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

function gaussian(seed, image, draw, size) {
  const key = mix((mix((mix(seed >>> 0) + image) >>> 0) + draw) >>> 0);
  const z = new Float32Array(size);
  for (let j = 0; j < size; j++) {
    const u1 = ((mix((key + 2 * j) >>> 0) >>> 8) + 0.5) / 16777216;
    const u2 = ((mix((key + 2 * j + 1) >>> 0) >>> 8) + 0.5) / 16777216;
    z[j] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return z;
}

// --- the levels a sampler visits: tinydiffusion's "trailing" spacing -----------------------------------------

function roundHalfEven(v) { // Python's round()
  const f = Math.floor(v), d = v - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : (f % 2 === 0 ? f : f + 1);
}

function levels(schedule, steps) { // [{k, alpha, sigma}] from the noisiest step down, then the clean image
  const T = schedule.timesteps, stride = T / steps, ks = new Set();
  for (let i = 0; i < steps; i++) ks.add(roundHalfEven(T - i * stride) - 1);
  const sorted = [...ks].sort((a, b) => b - a);
  return sorted.map((k) => ({ k, alpha: schedule.alpha[k], sigma: schedule.sigma[k] }))
    .concat([{ k: -1, alpha: 1, sigma: 0 }]);
}

// --- the model ------------------------------------------------------------------------------------------------

let session, decoder, meta; // decoder: a latent model's decoder graph, else null

function filled(n, value) { return new ort.Tensor("float32", new Float32Array(n).fill(value), [n]); }
function classes(values) { return new ort.Tensor("int64", BigInt64Array.from(values, BigInt), [values.length]); }

async function denoise(x, k, y, w, n) { // [x0, eps] at step k for class y (one per image), guided by w
  const dims = [n, ...meta.image_shape], t = meta.schedule.t[k];
  if (meta.inputs.includes("guidance")) { // a student: the scale is an input, one evaluation
    const out = await session.run({ x: new ort.Tensor("float32", x, dims), t: filled(n, t), y: classes(y),
      guidance: filled(n, w) });
    return [out.x0.data, out.eps.data];
  }
  if (w === 1 || meta.class_names.length === 0) {
    const out = await session.run({ x: new ort.Tensor("float32", x, dims), t: filled(n, t), y: classes(y) });
    return [out.x0.data, out.eps.data];
  }
  const both = new Float32Array(2 * x.length); // class and null class in one batch of 2n: uncond + w (cond - uncond)
  both.set(x);
  both.set(x, x.length);
  const out = await session.run({ x: new ort.Tensor("float32", both, [2 * n, ...meta.image_shape]),
    t: filled(2 * n, t), y: classes(y.concat(y.map(() => meta.null_class))) });
  return [out.x0.data, out.eps.data].map((v) => {
    const mixed = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) mixed[j] = v[j + x.length] + w * (v[j] - v[j + x.length]);
    return mixed;
  });
}

async function sample({ cls, seed, w, steps, n }) { // n images in model space, as one Float32Array
  const size = meta.image_shape.reduce((a, b) => a * b);
  let x = new Float32Array(n * size);
  for (let i = 0; i < n; i++) x.set(gaussian(seed, i, 0, size), i * size);
  const y = new Array(n).fill(cls), path = levels(meta.schedule, steps);
  const lambda = (l) => (l.alpha > 0 ? Math.log(l.alpha / l.sigma) : -Infinity);
  let previousX0 = null, previousH = null;
  for (let s = 0; s + 1 < path.length; s++) {
    const level = path[s], next = path[s + 1];
    const [x0, eps] = await denoise(x, level.k, y, w, n);
    const xn = new Float32Array(x.length);
    if (next.sigma === 0) {
      xn.set(x0);
    } else if (meta.sampler === "ddim") { // eta = 0
      for (let j = 0; j < x.length; j++) xn[j] = next.alpha * x0[j] + next.sigma * eps[j];
    } else if (meta.sampler === "consistency") { // denoise, then noise afresh to the next level
      for (let i = 0; i < n; i++) {
        const z = gaussian(seed, i, s + 1, size);
        for (let j = 0; j < size; j++) xn[i * size + j] = next.alpha * x0[i * size + j] + next.sigma * z[j];
      }
    } else { // dpmpp-2m: second order from the second step on
      const h = lambda(next) - lambda(level), r = previousH === null ? 0 : previousH / h;
      const a = next.sigma / level.sigma, b = -next.alpha * Math.expm1(-h);
      for (let j = 0; j < x.length; j++) {
        const d = previousX0 === null ? x0[j] : x0[j] + (x0[j] - previousX0[j]) / (2 * r);
        xn[j] = a * x[j] + b * d;
      }
      previousH = h;
    }
    previousX0 = x0;
    x = xn;
  }
  return x;
}

async function decode(x, n) { // what the sampler ended on -> images in [-1, 1]: a latent model's through its decoder
  if (!decoder) return x;
  const out = await decoder.run({ z: new ort.Tensor("float32", x, [n, ...meta.image_shape]) });
  return out.image.data;
}

// --- the page ---------------------------------------------------------------------------------------------------

function show(x, n) { // images in [-1, 1] on the canvases: the model's own shape, or a latent model's decoded one
  const [C, H, W] = meta.latent ? meta.latent.image_shape : meta.image_shape, box = $("images");
  while (box.children.length > n) box.lastChild.remove();
  while (box.children.length < n) {
    const canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    box.append(canvas);
  }
  for (let i = 0; i < n; i++) {
    const context = box.children[i].getContext("2d"), image = context.createImageData(W, H);
    for (let p = 0; p < H * W; p++) {
      for (let c = 0; c < 3; c++) {
        const v = x[i * C * H * W + (C === 1 ? 0 : c) * H * W + p];
        image.data[4 * p + c] = Math.min(255, Math.max(0, Math.round((v + 1) * 127.5)));
      }
      image.data[4 * p + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  }
}

function settings() { // the controls' values, or an Error saying which is wrong
  const seed = Number($("seed").value), steps = Number($("steps").value), w = Number($("guidance").value);
  if (!Number.isInteger(seed) || seed < 0 || seed > 4294967295) return new Error("the seed is a whole number from 0 to 4294967295");
  const T = meta.schedule.timesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > T) return new Error(`the steps are a whole number from 1 to ${T}`);
  return { cls: Number($("class").value || meta.null_class), seed, w, steps, n: Number($("count").value) };
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function drawOnce() {
  const s = settings();
  if (s instanceof Error) { status(s.message + ".", true); return; }
  const start = performance.now();
  const x = await decode(await sample(s), s.n);
  show(x, s.n);
  const ms = performance.now() - start, name = meta.class_names[s.cls];
  status(`${s.n} image${s.n > 1 ? "s" : ""}${name ? `, class ${name}` : ""}, seed ${s.seed}, ${s.steps} step` +
    `${s.steps > 1 ? "s" : ""}, guidance ${s.w}: ${(ms / s.n).toFixed(1)} ms per image (${ms.toFixed(0)} ms in all)`);
}

let busy = false, again = false;

async function draw() { // draws the latest settings; a change while drawing is drawn next
  if (busy) { again = true; return; }
  busy = true;
  try {
    do { again = false; await drawOnce(); } while (again);
  } catch (err) {
    status(`error: ${err.message}`, true);
  } finally {
    busy = false;
  }
}

function setUp() {
  const select = $("class");
  meta.class_names.forEach((name, i) => select.add(new Option(`${i}: ${name}`, String(i))));
  if (meta.class_names.length === 0) { $("class-label").hidden = true; $("guidance-label").hidden = true; }
  const [low, high] = meta.guidance_range || [0, 8];
  Object.assign($("guidance"), { min: low, max: high, value: meta.guidance });
  $("guidance-value").textContent = meta.guidance;
  $("guidance").addEventListener("input", () => { $("guidance-value").textContent = $("guidance").value; });
  Object.assign($("steps"), { max: meta.schedule.timesteps, value: meta.steps });
  // a trajectory student samples with its own steps only; a consistency student and a teacher with any number
  $("steps").disabled = meta.guidance_range !== null && meta.sampler !== "consistency";
  for (const control of ["class", "seed", "guidance", "steps", "count"]) $(control).addEventListener("input", draw);
  $("controls").addEventListener("submit", (event) => event.preventDefault());
}

async function main() {
  meta = JSON.parse(new TextDecoder().decode(await fetchChecked("model.json")));
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no cross-origin isolation needed
  ort.env.wasm.wasmBinary = await fetchChecked(WASM); // the checked bytes; the runtime fetches nothing itself
  session = await ort.InferenceSession.create(await fetchChecked("model.onnx"), { executionProviders: ["wasm"] });
  decoder = meta.latent ? await ort.InferenceSession.create(await fetchChecked(meta.latent.decoder),
    { executionProviders: ["wasm"] }) : null;
  setUp();
  await draw();
}

main().catch((err) => status(`error: ${err.message}`, true));
