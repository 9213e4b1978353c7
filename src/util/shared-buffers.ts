/**
 * Reuse of SharedArrayBuffers. V8 (Node 20) does not count their memory towards the pressure that
 * starts a garbage collection, so dropped SharedArrayBuffers pile up: allocating and dropping one
 * of 25 MB 400 times leaves 10 GB resident, where ArrayBuffers stay at 0.2 GB. The worker pools
 * therefore take their shared scratch from here and give it back, and hand callers ordinary
 * memory. A dropped buffer is worse still once it has been posted to a worker thread: it lives as
 * long as that worker's isolate holds the message, which for a worker that rarely collects garbage
 * is for ever (measured on a Llama-3.2-1B-shaped server: ~1.7 GB of dropped buffers left after a
 * forced collection of the main thread, 2 layers). The worker pools therefore never drop theirs
 * (maxBytes Infinity) and take them with acquireAtLeast, so that a few buffers serve every size.
 */
export class SharedBuffers {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private freeBytes = 0;

  /** maxBytes: the most idle memory kept for reuse; beyond it, released buffers are dropped. */
  constructor(private readonly maxBytes = 1 << 30) {}

  /** A buffer of exactly `bytes` bytes (reused or new). Its contents are unspecified. */
  acquire(bytes: number): SharedArrayBuffer {
    const list = this.free.get(bytes);
    const buf = list?.pop();
    if (buf) {
      this.freeBytes -= bytes;
      return buf;
    }
    return new SharedArrayBuffer(bytes);
  }

  /**
   * A buffer of at least `bytes` bytes: the smallest idle one that is large enough, else a new one
   * of exactly `bytes`. For callers that take views of explicit length: serving requests of many
   * sizes from the same few buffers keeps the memory at the largest working set instead of one
   * set per size (and nothing is dropped to a garbage collector that does not see it).
   */
  acquireAtLeast(bytes: number): SharedArrayBuffer {
    let best = -1;
    for (const size of this.free.keys()) {
      if (size >= bytes && (best < 0 || size < best) && this.free.get(size)!.length > 0) best = size;
    }
    return this.acquire(best < 0 ? bytes : best);
  }

  /** Gives a buffer back (the caller must hold no view of it any more). */
  release(buf: SharedArrayBuffer): void {
    if (this.freeBytes + buf.byteLength > this.maxBytes) return;
    let list = this.free.get(buf.byteLength);
    if (!list) {
      list = [];
      this.free.set(buf.byteLength, list);
    }
    list.push(buf);
    this.freeBytes += buf.byteLength;
  }

  /** Bytes held for reuse. */
  get idleBytes(): number {
    return this.freeBytes;
  }
}
