// The encrypted mode of a fine-tuning run (train/fine-tune.ts): the frozen products run on a helora
// server. Before any data is sent the server's model hash is checked, against the one the user
// expects or else against the hash recomputed from the local folder when it has the projection
// weights, and its shapes against the local config.

import type { LlamaConfig } from '../model/config.js';
import { folderHasProjections, type ConnectEncrypted } from '../train/fine-tune.js';
import type { MaskMode } from '../linear/types.js';
import { RemoteEncryptedProvider, type RemoteStats } from './client.js';
import { checkShapeMatches } from './model-info.js';
import { modelHashOfFolder } from './model-server.js';

export interface RemoteTrainingOptions {
  /** ws:// or wss:// URL of the server. */
  url: string;
  token?: string;
  /** The model hash to insist on (sha256 hex, as the server prints it). */
  expectHash?: string;
  /** PEM CA for a server with a self-signed certificate. */
  ca?: string;
  /** Reconnect deadline, ms. */
  retryDeadlineMs?: number;
  /** Masks: the server's public tables when it offers them (default), or fresh per request. */
  masks?: MaskMode;
  /** Folder for downloaded mask tables (default: the user's cache folder). */
  tableCache?: string;
  /** Messages for the user (the hash check, the table download). */
  say?: (line: string) => void;
}

/** How the server's model hash was checked. */
export type HashCheck = 'expected' | 'local-folder' | 'unverified';

/** The server a run trains through; after the run it still tells which model it had and what went over the wire. */
export class RemoteTraining {
  modelHash: string | null = null;
  hashCheck: HashCheck | null = null;
  private remote: RemoteEncryptedProvider | null = null;

  constructor(private readonly o: RemoteTrainingOptions) {}

  /** fineTune's connectEncrypted. */
  readonly connect: ConnectEncrypted = async (config: LlamaConfig, modelDir: string) => {
    const say = this.o.say ?? (() => {});
    let expected = this.o.expectHash?.toLowerCase();
    let hashCheck: HashCheck = expected ? 'expected' : 'unverified';
    if (!expected && folderHasProjections(modelDir)) {
      expected = modelHashOfFolder(modelDir);
      hashCheck = 'local-folder';
    }
    this.hashCheck = hashCheck;
    const remote = await RemoteEncryptedProvider.connect({
      url: this.o.url, token: this.o.token, expectedModelHash: expected, ca: this.o.ca, retryDeadlineMs: this.o.retryDeadlineMs,
      masks: this.o.masks, tableCache: this.o.tableCache,
      onTableLayer: (layer, bytes, layers) => say(`helora: mask table of layer ${layer + 1}/${layers} downloaded (${(bytes / 2 ** 20).toFixed(1)} MiB, checked)`),
    });
    this.remote = remote;
    const hash = remote.info.hash;
    this.modelHash = hash;
    checkShapeMatches(remote.info, config);
    if (hashCheck === 'unverified') say(`helora: server model hash ${hash} (NOT verified: pass --expect-hash, or keep the projection weights in --model to check it)`);
    else say(`helora: server model hash ${hash} verified (${hashCheck === 'expected' ? '--expect-hash' : 'recomputed from the local model folder'})`);
    say(remote.masks === 'table' ? 'helora: masks: the server\'s public mask tables (a fresh secret per block)' : 'helora: masks: fresh per request');
    return {
      provider: remote,
      traffic: () => {
        const s = remote.stats();
        return { up: s.bytesUp, down: s.bytesDown };
      },
      close: () => remote.close(),
    };
  };

  /** Traffic, time split and reconnects of the connection (null before it is made). */
  stats(): RemoteStats | null {
    return this.remote?.stats() ?? null;
  }
}
