/**
 * Request / reply over one worker thread: each request gets an id, the worker answers
 * `{ id, ok, error? }` plus its result fields. The worker is ref'd only while an answer is owed
 * (an idle pool never keeps the process alive), and when it dies every pending call fails.
 */
import type { Worker } from 'node:worker_threads';

/** What the worker receives. */
export interface WorkerEnvelope<Req> {
  id: number;
  req: Req;
}

/** What the worker answers (plus its result fields). */
export interface WorkerReply {
  id: number;
  ok: boolean;
  error?: string;
}

interface Pending<R> {
  resolve: (reply: R) => void;
  reject: (e: Error) => void;
}

export class WorkerChannel<Req, Reply extends WorkerReply> {
  private readonly pending = new Map<number, Pending<Reply>>();
  private nextId = 1;
  /** Why the worker can no longer answer (set once it failed or exited). */
  dead: Error | null = null;
  /** Resolves with the exit code once the worker has exited. */
  readonly exited: Promise<number>;

  constructor(readonly worker: Worker, private readonly what: string) {
    worker.unref();
    worker.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.ok) p.resolve(m);
      else p.reject(new Error(m.error ?? `helora: ${what} failed`));
    });
    worker.on('error', (e) => this.fail(e instanceof Error ? e : new Error(String(e))));
    this.exited = new Promise((resolve) => worker.on('exit', (code) => {
      this.fail(new Error(`helora: ${what} exited (code ${code})`));
      resolve(code);
    }));
  }

  /** Answers owed. */
  get inFlight(): number {
    return this.pending.size;
  }

  call(req: Req, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      const envelope: WorkerEnvelope<Req> = { id, req };
      this.worker.postMessage(envelope, transfer);
    });
  }

  private fail(e: Error): void {
    this.dead ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
