// The encrypted mode of a fine-tuning run (train/fine-tune.ts): the frozen products run on a helora
// server. Before any data is sent the server's model hash is checked, against the one the user
// expects or else against the hash recomputed from the local folder when it has the projection
// weights, and its shapes against the local config. A hash that cannot be checked is refused unless
// the user allows it (allowUnverified, --allow-unverified): the run fails closed.

import type { LlamaConfig } from '../model/config.js';
import { folderHasProjections, type ConnectEncrypted } from '../train/fine-tune.js';
import { paramsById } from '../crypto/index.js';
import type { MaskMode } from '../linear/types.js';
import { RemoteEncryptedProvider, RemoteSession, type RemoteStats } from './client.js';
import { DEFAULT_TOKENS_PER_CHECK, ResultIntegrity } from './integrity.js';
import { checkShapeMatches, shapeOf } from './model-info.js';
import { loadQuantizedModel, type QuantizedModel } from './model-server.js';
import { ClientAudit, type ConnectionFacts, type HashCheck } from './audit.js';
import { tokenFingerprint } from './token.js';
import { AuditLog } from '../util/audit-log.js';

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
  /** Train through a server whose model hash could not be checked (no --expect-hash, no local projections). */
  allowUnverified?: boolean;
  /**
   * Check every result against the public weights (integrity.ts; default true). Possible only when
   * the local model folder has the projection weights; otherwise results are not checked.
   */
  verifyResults?: boolean;
  /** Tokens of each request whose results are checked (drawn after the answer arrives; 0: every token). */
  checkTokens?: number;
  /** Bits the client quantizes to (default: the server's; at most the server's, never sent). */
  actBits?: number;
  /** Worker threads of the client's encryption and decryption (default: one per core). */
  threads?: number;
  /** Messages for the user (the hash check, the table download). */
  say?: (line: string) => void;
  /**
   * The client's audit log (transport/audit.ts), opened (its chain checked, and continued) before
   * the server is contacted; every answered request is recorded in it.
   */
  auditLog?: string;
}

export type { ConnectionFacts, HashCheck };

/** The server a run trains through; after the run it still tells which model it had and what went over the wire. */
export class RemoteTraining {
  modelHash: string | null = null;
  hashCheck: HashCheck | null = null;
  /** Whether every result is checked against the public weights. */
  resultsVerified = false;
  private remote: RemoteEncryptedProvider | null = null;
  /** The audit log, open from connect until closeAudit. */
  audit: ClientAudit | null = null;

  constructor(private readonly o: RemoteTrainingOptions) {}

  /** fineTune's connectEncrypted. */
  readonly connect: ConnectEncrypted = async (config: LlamaConfig, modelDir: string) => {
    const say = this.o.say ?? (() => {});
    const checkTokens = this.o.checkTokens ?? DEFAULT_TOKENS_PER_CHECK;
    if (!(Number.isInteger(checkTokens) && checkTokens >= 0)) throw new Error(`helora: --check-tokens must be a whole number >= 0, got ${checkTokens}`);
    let expected = this.o.expectHash?.toLowerCase();
    let hashCheck: HashCheck = expected ? 'expected' : 'unverified';
    // The local projections (when the folder has them) give the hash and the integrity vectors.
    let local: QuantizedModel | null = folderHasProjections(modelDir) ? loadQuantizedModel(modelDir) : null;
    // Local projections of another model than the expected one cannot check its results.
    if (local && expected && local.hash !== expected) local = null;
    if (!expected && local) {
      expected = local.hash;
      hashCheck = 'local-folder';
    }
    this.hashCheck = hashCheck;
    // A broken log stops the run before anything is sent.
    if (this.o.auditLog !== undefined && !this.audit) this.audit = new ClientAudit(AuditLog.open(this.o.auditLog));
    const audit = this.audit;
    const session = await RemoteSession.connect({
      url: this.o.url, token: this.o.token, expectedModelHash: expected, ca: this.o.ca, retryDeadlineMs: this.o.retryDeadlineMs, localShape: shapeOf(config),
      onExchange: audit ? (e) => audit.exchange(e) : undefined,
      onFailedRequest: audit ? (e) => audit.failedRequest(e) : undefined,
    });
    const verify = (this.o.verifyResults ?? true) && local !== null;
    let integrity: ResultIntegrity | undefined;
    let remote: RemoteEncryptedProvider;
    try {
      integrity = verify ? ResultIntegrity.fromQuantizedLayers(local!.layers, paramsById(session.info.paramsId), session.info.actBits, checkTokens) : undefined;
      remote = await RemoteEncryptedProvider.open(session, {
        integrity, masks: this.o.masks, tableCache: this.o.tableCache, actBits: this.o.actBits, threads: this.o.threads,
        onTableLayer: (layer, bytes, layers) => say(`helora: mask table of layer ${layer + 1}/${layers} downloaded (${(bytes / 2 ** 20).toFixed(1)} MiB, checked)`),
      });
    } catch (e) {
      await session.close();
      throw e;
    }
    local = null; // the int8 weights are not needed any more
    this.resultsVerified = integrity !== undefined;
    const hash = remote.info.hash;
    if (hashCheck === 'unverified' && !this.o.allowUnverified) {
      await remote.close();
      throw new Error(`helora: the server's model hash ${hash} cannot be verified: pass --expect-hash, or keep the projection weights in --model `
        + 'so the hash is recomputed locally; --allow-unverified trains through an unchecked model');
    }
    this.remote = remote;
    this.modelHash = hash;
    checkShapeMatches(remote.info, config);
    if (hashCheck === 'unverified') say(`helora: server model hash ${hash} (NOT verified, --allow-unverified)`);
    else say(`helora: server model hash ${hash} verified (${hashCheck === 'expected' ? '--expect-hash' : 'recomputed from the local model folder'})`);
    say(remote.masks === 'table' ? 'helora: masks: the server\'s public mask tables (a fresh secret per block)' : 'helora: masks: fresh per request');
    if (this.o.actBits !== undefined) say(`helora: activations and gradients quantized to ${this.o.actBits} bits (the server allows up to ${remote.info.actBits}; the width is not sent)`);
    if (integrity) {
      const which = checkTokens === 0 ? 'every token of every request' : `${checkTokens} tokens of each request, drawn after its answer arrives (--check-tokens 0: every token)`;
      say(`helora: results are checked against the public weights (Freivalds check on ${which}; --no-verify-results turns it off)`);
    }
    else say(`helora: results are NOT checked against the weights (${this.o.verifyResults === false ? '--no-verify-results' : 'the model folder has no projection weights of this model to check them with'})`);
    return {
      provider: remote,
      traffic: () => {
        const s = remote.stats();
        return { up: s.bytesUp, down: s.bytesDown };
      },
      close: () => remote.close(),
    };
  };

  /** What the audit log's run_start records about the connection (null before it is made). */
  facts(): ConnectionFacts | null {
    const r = this.remote;
    if (!r || !this.modelHash || !this.hashCheck) return null;
    return {
      modelHash: this.modelHash, hashCheck: this.hashCheck, paramsId: r.info.paramsId, actBits: r.info.actBits, masks: r.masks, server: r.session.url,
      tokenId: this.o.token !== undefined ? tokenFingerprint(this.o.token) : null, resultsVerified: this.resultsVerified,
    };
  }

  closeAudit(): void {
    this.audit?.close();
    this.audit = null;
  }

  /** Traffic, time split and reconnects of the connection (null before it is made). */
  stats(): RemoteStats | null {
    return this.remote?.stats() ?? null;
  }
}
