// Run Python files, in order, in one real MicroPython 1.27 (the npm WebAssembly build):
//   node run.mjs [--heap BYTES] a.py b.py ...
// Their output goes to stdout; a Python exception exits 1 with its traceback on stderr.
import { readFileSync } from "node:fs";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
let heapsize = 1 << 20;
if (args[0] === "--heap") {
  heapsize = Number(args[1]);
  args.splice(0, 2);
}
const mp = await loadMicroPython({
  heapsize,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
let rc = 0;
for (const path of args) {
  try {
    mp.runPython(readFileSync(path, "utf8"));
  } catch (err) {
    process.stderr.write(`${path}: ${err}\n`);
    rc = 1;
    break;
  }
}
// The WebAssembly module keeps node's event loop alive: leave explicitly.
process.exit(rc);
