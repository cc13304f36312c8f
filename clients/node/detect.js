#!/usr/bin/env node
// Run an rpdetect detector .onnx with onnxruntime-node (CPU) and print its outputs as JSON.
//
//   node detect.js --model detector.onnx --image image.npy [--noise noise.npy]
//                  [--threshold1 T1 --threshold2 T2 [--threshold3 T3]] [--threads N]
//
// Tensors are read from .npy files (numpy.save): float32 image [B, C, H, W] in [0, 1] for a
// float-nchw detector, uint8 [B, H, W, 3] for a uint8-nhwc-* detector; float32 noise
// [B, n, C, H, W] (standard normal, not yet scaled by kappa) for a detector built with
// noise="input". Nothing else is decoded here: no image libraries are needed.
//
// The tensor names and rpdetect.* metadata keys used here are the detector file's contract,
// stated once in src/rpdetect/contract.py (OUTPUTS, THRESHOLD_NAMES, METADATA_KEYS).
'use strict';

const fs = require('node:fs');
const ort = require('onnxruntime-node');

const USAGE =
  'usage: node detect.js --model FILE.onnx --image IMAGE.npy [--noise NOISE.npy] ' +
  '[--threshold1 T1 --threshold2 T2 [--threshold3 T3]] [--threads N]';

class UsageError extends Error {}

function parseArgs(argv) {
  const known = new Set(['model', 'image', 'noise', 'threshold1', 'threshold2', 'threshold3',
    'threads']);
  const args = {};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '-h' || flag === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    const name = flag.startsWith('--') ? flag.slice(2) : '';
    if (!known.has(name)) throw new UsageError(`unknown argument ${JSON.stringify(flag)}\n${USAGE}`);
    if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value\n${USAGE}`);
    args[name] = argv[i + 1];
    i += 1;
  }
  for (const required of ['model', 'image']) {
    if (!args[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  }
  if ((args.threshold1 === undefined) !== (args.threshold2 === undefined)) {
    throw new UsageError('give --threshold1 and --threshold2 together (`rpdetect info` shows the ' +
      'defaults stored in the file)');
  }
  if (args.threshold3 !== undefined && args.threshold1 === undefined) {
    throw new UsageError('--threshold3 goes with --threshold1 and --threshold2');
  }
  for (const name of ['threshold1', 'threshold2', 'threshold3', 'threads']) {
    if (args[name] !== undefined) {
      const text = args[name].replace(/^\+?inf(inity)?$/i, 'Infinity');
      const value = Number(text);
      if (Number.isNaN(value)) throw new UsageError(`--${name}: not a number: ${args[name]}`);
      args[name] = value;
    }
  }
  return args;
}

// numpy .npy (format 1.0 / 2.0 / 3.0), little-endian float32 or uint8, C order.
const NPY_DTYPES = {
  '<f4': { type: 'float32', Array: Float32Array },
  '|u1': { type: 'uint8', Array: Uint8Array },
};

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') {
    throw new Error(`${path}: not a .npy file (write it with numpy.save)`);
  }
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shape) throw new Error(`${path}: unreadable .npy header ${header.trim()}`);
  const dtype = NPY_DTYPES[descr[1]];
  if (!dtype) {
    throw new Error(
      `${path}: dtype ${descr[1]} is not supported; save float32 ('<f4') or uint8 ('|u1') arrays`);
  }
  if (fortran[1] === 'True') throw new Error(`${path}: Fortran order; save np.ascontiguousarray(x)`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = count * dtype.Array.BYTES_PER_ELEMENT;
  if (buf.length - start < bytes) throw new Error(`${path}: truncated, expected ${bytes} data bytes`);
  // Copy into a fresh, aligned buffer: the data offset in the file need not be aligned.
  const data = new dtype.Array(count);
  new Uint8Array(data.buffer).set(buf.subarray(start, start + bytes));
  return new ort.Tensor(dtype.type, data, dims);
}

function checkFeed(session, name, tensor, file) {
  const meta = session.inputMetadata.find((m) => m.name === name);
  if (!meta) {
    const names = session.inputNames.join(', ');
    throw new Error(`${file}: the model has no input '${name}' (its inputs: ${names})` +
      (name === 'noise' ? '; it draws its own noise (noise="graph"), drop --noise' : ''));
  }
  if (meta.isTensor && meta.type !== tensor.type) {
    throw new Error(`${file}: input '${name}' needs ${meta.type}, the file holds ${tensor.type}`);
  }
  const want = meta.shape || [];
  const same = want.length === tensor.dims.length &&
    want.every((d, i) => typeof d !== 'number' || d === tensor.dims[i]);
  if (!same) {
    throw new Error(`${file}: input '${name}' needs shape [${want}], the file holds [${tensor.dims}]`);
  }
}

function toPlain(tensor) {
  const values = Array.from(tensor.data, (v) => (typeof v === 'bigint' ? Number(v) : v));
  const flat = tensor.type === 'bool' ? values.map(Boolean) : values;
  if (tensor.dims.length === 0) return flat[0];
  if (tensor.dims.length === 1) return flat;
  const rows = tensor.dims[0];
  const width = flat.length / rows;
  return Array.from({ length: rows }, (_, r) => flat.slice(r * width, (r + 1) * width));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // logSeverityLevel 3 (errors only): ORT warns that threshold1/threshold2 are initializers that
  // are also graph inputs, which is on purpose (calibrated defaults, overridable per run).
  const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
  if (args.threads !== undefined) options.intraOpNumThreads = args.threads;
  const session = await ort.InferenceSession.create(args.model, options);

  const feeds = { image: readNpy(args.image) };
  checkFeed(session, 'image', feeds.image, args.image);
  const needsNoise = session.inputNames.includes('noise');
  if (args.noise !== undefined) {
    feeds.noise = readNpy(args.noise);
    checkFeed(session, 'noise', feeds.noise, args.noise);
  } else if (needsNoise) {
    throw new Error(`${args.model}: built with noise="input": pass --noise NOISE.npy ` +
      '(float32 [B, n, C, H, W] drawn from N(0, 1))');
  }

  const out = await session.run(feeds);
  const result = {};
  for (const name of session.outputNames) result[name] = toPlain(out[name]);
  if (args.threshold1 !== undefined) {
    if (out.flips !== undefined && args.threshold3 === undefined) {
      throw new UsageError(`${args.model} has a flip count: an override needs --threshold3 too ` +
        '(inf leaves it unused; `rpdetect info` shows the defaults stored in the file)');
    }
    result.is_adversarial = verdict(out, args.threshold1, args.threshold2, args.threshold3);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// onnxruntime-node feeds only the inputs it lists, and it does not list initializer-backed
// inputs (threshold1/2/3): a threshold fed to session.run is silently ignored. So an override
// (one value for every kappa) is applied here with the graph's own rule (rpdetect.rule): any
// copy's float32 score over its float32 threshold, or more flips than threshold3.
function verdict(out, threshold1, threshold2, threshold3) {
  const t1 = Math.fround(threshold1);
  const t2 = Math.fround(threshold2);
  const t3 = threshold3 === undefined ? Infinity : Math.fround(threshold3);
  const s1 = out.score1_max.data;
  const s2 = out.score2_max.data;
  const flips = out.flips === undefined ? null : Array.from(out.flips.data, Number);
  return Array.from(s1, (v, i) => v > t1 || s2[i] > t2 || (flips !== null && flips[i] > t3));
}

main().catch((err) => {
  console.error(`rpdetect-node: error: ${err.message}`);
  process.exit(2);
});
