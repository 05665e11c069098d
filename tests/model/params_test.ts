/**
 * The flat layout of a parameter store: every tensor reads back as
 * uploaded, decayed tensors come first, gradient stores share the layout,
 * and a store past the buffer limit splits into several buffers.
 */

import assert from "node:assert/strict";
import { withGpu } from "../_util.ts";
import { initialParameters } from "../../src/model/init.ts";
import { decays, ParamStore, trainedNames } from "../../src/model/params.ts";
import type { LanguageConfig } from "../../src/model/config.ts";
import { toF32 } from "../../src/io/dtype.ts";

const LANG: LanguageConfig = {
  family: "language",
  attention: "tssa",
  block_size: 16,
  vocab_size: 13,
  n_layer: 2,
  n_head: 2,
  n_embd: 16,
  bias: true,
  dropout: 0,
  norm_eps: 1e-5,
};

for (const maxBytes of [undefined, 4096]) {
  Deno.test(`flat parameter store, ${maxBytes ? "several buffers" : "one buffer"}`, async () => {
    await withGpu(async (gpu) => {
      const named = initialParameters(LANG, 5);
      const store = ParamStore.upload(gpu, LANG, named, maxBytes);
      const grads = ParamStore.zeros(gpu, LANG, undefined, maxBytes);
      try {
        const names = trainedNames(LANG);
        assert.deepEqual(store.entries().map(([n]) => n), names, "the reference's order");
        const back = await gpu.readMany(names.map((n) => store.get(n)));
        names.forEach((n, i) => {
          const t = named.get(n)!;
          assert.deepEqual(back[i], toF32(t.dtype, t.data), n);
        });
        const segs = store.segments();
        assert.equal(segs.length > 1, maxBytes !== undefined);
        assert.deepEqual(segs.flatMap((s) => s.names).sort(), [...names].sort());
        for (const [k, seg] of segs.entries()) {
          if (maxBytes) assert.ok(seg.tensor.byteSize <= maxBytes);
          const g = grads.segments()[k];
          assert.equal(g.tensor.numel, seg.tensor.numel);
          assert.equal(g.decayEnd, seg.decayEnd);
          assert.deepEqual(g.names, seg.names);
          for (const n of seg.names) {
            const t = store.get(n);
            assert.equal(t.buffer, seg.tensor.buffer);
            assert.equal(t.offset % 256, 0);
            assert.equal(grads.get(n).offset, t.offset);
            const end = t.offset / 4 + t.numel;
            if (decays(n, t.shape)) assert.ok(end <= seg.decayEnd, `${n} decays`);
            else assert.ok(t.offset / 4 >= seg.decayEnd, `${n} does not decay`);
          }
        }
      } finally {
        store.destroy();
        grads.destroy();
      }
    });
  });
}
