/**
 * Connections: a connector configured in a workspace, kept in the document store (`connections`). The
 * non-secret config is stored as is; the secret fields are sealed together with AES-256-GCM (connectors/crypto.ts)
 * bound to the connection id. Nothing here returns, logs or prints a secret except `resolve()`, which hands the
 * opened config to connector code.
 *
 * Every admin change (add, update, enable, disable, remove, key rotation, a revoked grant) is committed together
 * with its `connection.changed` (or, for webhooks, `webhook.changed`) event; connectors/events.ts publishes it.
 * A refreshed OAuth2 token is not an admin change and is saved without an event.
 */
import type { Actor } from '../core/events/catalog.js';
import type { Hub } from '../core/hub.js';
import { newId } from '../core/ids.js';
import { Keyring } from './crypto.js';
import { recordOutbox } from '../core/events/outbox-entry.js';
import { changeEvent, publishCommitted, type ConnectionAction } from './events.js';
import { getConnector } from './registry.js';
import type { ConnectionRecord, ConnectionStatus, Connector, ConnectorContext, ResolvedConnection } from './types.js';

export const CONNECTIONS = 'connections';

export class ConnectionError extends Error {
  constructor(
    message: string,
    readonly code: 'NOT_FOUND' | 'VALIDATION_FAILED' | 'CONFLICT',
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ConnectionError';
  }
}

/** What `list` and `get` show: the record without the sealed blob. */
export type ConnectionView = Omit<ConnectionRecord, 'sealed'>;

export function viewOf(rec: ConnectionRecord): ConnectionView {
  const { sealed: _sealed, ...rest } = rec;
  return rest;
}

export class ConnectionService {
  readonly keyring: Keyring;
  /** Who the events name as having made the change (a user through the API, the CLI, a plugin). */
  readonly actor: Actor;

  constructor(
    private readonly hub: Hub,
    actor?: Actor,
  ) {
    this.keyring = Keyring.from(hub.secrets.encryptionKey, hub.config.previousSecretKeys ?? []);
    this.actor = actor ?? { type: 'system', id: hub.name ?? 'voxa' };
  }

  /** Writes the record and its change event in one atomic unit, then publishes the event. */
  private async commit(rec: ConnectionRecord, action: ConnectionAction): Promise<void> {
    const events = recordOutbox(() => changeEvent(this.hub, rec, action, this.actor));
    await this.hub.store.putDoc(CONNECTIONS, rec.id, rec, events);
    publishCommitted(this.hub, events.entries);
  }

  private get docs() {
    return this.hub.store.docs;
  }

  /** Validates `input` against the connector's schema, seals the secret fields and stores the connection. */
  async create(workspaceId: string, connectorId: string, input: Record<string, unknown>, name?: string): Promise<ConnectionView> {
    const connector = getConnector(connectorId);
    if (!connector) throw new ConnectionError(`unknown connector "${connectorId}"`, 'NOT_FOUND');
    const parsed = parseConfig(connector, input);
    const id = newId('con');
    const now = new Date().toISOString();
    const rec: ConnectionRecord = {
      id,
      workspaceId,
      connector: connectorId,
      name: name ?? `${connector.displayName}`,
      ...this.split(connector, id, parsed),
      status: 'active',
      statusReason: null,
      createdAt: now,
      updatedAt: now,
    };
    const events = recordOutbox(() => changeEvent(this.hub, rec, 'added', this.actor));
    await this.hub.store.insertDoc(CONNECTIONS, id, rec, events);
    publishCommitted(this.hub, events.entries);
    return viewOf(rec);
  }

  private split(connector: Connector, id: string, parsed: Record<string, unknown>): Pick<ConnectionRecord, 'config' | 'secretFields' | 'sealed'> {
    const config: Record<string, unknown> = {};
    const secrets: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(parsed)) {
      if (connector.secretFields.includes(k)) {
        if (v !== undefined && v !== '') secrets[k] = v;
      } else config[k] = v;
    }
    const names = Object.keys(secrets);
    return { config, secretFields: names, sealed: names.length ? this.keyring.seal(JSON.stringify(secrets), id) : null };
  }

  async getRecord(id: string, workspaceId?: string): Promise<ConnectionRecord> {
    const rec = await this.docs.get<ConnectionRecord>(CONNECTIONS, id);
    if (!rec || (workspaceId !== undefined && rec.workspaceId !== workspaceId)) throw new ConnectionError(`no connection ${id}`, 'NOT_FOUND');
    return rec;
  }

  async get(id: string, workspaceId?: string): Promise<ConnectionView> {
    return viewOf(await this.getRecord(id, workspaceId));
  }

  async list(workspaceId: string, connector?: string): Promise<ConnectionView[]> {
    const filter: Record<string, string> = { workspaceId };
    if (connector) filter.connector = connector;
    return (await this.docs.find<ConnectionRecord>(CONNECTIONS, filter)).map(viewOf);
  }

  /** Every connection of one connector in every workspace (for plugins fanning an event out). */
  async allOf(connector: string): Promise<ConnectionRecord[]> {
    return this.docs.find<ConnectionRecord>(CONNECTIONS, { connector });
  }

  /** Opens the secrets. For connector code only; the result must never be logged or printed. */
  async resolve<C = Record<string, unknown>>(idOrRec: string | ConnectionRecord): Promise<ResolvedConnection<C>> {
    const rec = typeof idOrRec === 'string' ? await this.getRecord(idOrRec) : idOrRec;
    const secrets = rec.sealed ? (JSON.parse(this.keyring.open(rec.sealed, rec.id)) as Record<string, unknown>) : {};
    return { record: rec, config: { ...rec.config, ...secrets } as C };
  }

  /** Merges config and secret changes, re-validating the whole config. */
  async update(id: string, patch: Record<string, unknown>, workspaceId?: string, opts: { name?: string } = {}): Promise<ConnectionView> {
    const next = await this.merged(id, patch, workspaceId);
    if (opts.name !== undefined) next.name = opts.name;
    await this.commit(next, 'updated');
    return viewOf(next);
  }

  private async merged(id: string, patch: Record<string, unknown>, workspaceId?: string): Promise<ConnectionRecord> {
    const rec = await this.getRecord(id, workspaceId);
    const connector = getConnector(rec.connector);
    if (!connector) throw new ConnectionError(`connector ${rec.connector} is not installed`, 'NOT_FOUND');
    const current = (await this.resolve(rec)).config;
    const parsed = parseConfig(connector, { ...current, ...patch });
    return { ...rec, ...this.split(connector, id, parsed), updatedAt: new Date().toISOString() };
  }

  /**
   * Writes `change` of the record as it is at the write, with its `action` event, in one store write, then
   * publishes the event. Null, and nothing written, when there is no such record or `change` declines.
   */
  private async transition(id: string, action: ConnectionAction, change: (cur: ConnectionRecord) => ConnectionRecord | null): Promise<ConnectionRecord | null> {
    const events = recordOutbox((rec: ConnectionRecord) => changeEvent(this.hub, rec, action, this.actor));
    const next = await this.hub.store.updateDoc<ConnectionRecord>(CONNECTIONS, id, change, events);
    if (next) publishCommitted(this.hub, events.entries);
    return next;
  }

  /**
   * Changes the status. `action` defaults from the status (active → enabled, disabled → disabled, broken →
   * broken); the webhooks plugin passes 'auto_disabled' when it gives up on an endpoint.
   */
  async setStatus(id: string, status: ConnectionStatus, reason: string | null, workspaceId?: string, action?: ConnectionAction): Promise<ConnectionView> {
    const now = new Date().toISOString();
    // Only the status fields, over the record as it is at the write: a token refresh saved meanwhile stays.
    const next = await this.transition(id, action ?? (status === 'active' ? 'enabled' : status), (cur) =>
      workspaceId !== undefined && cur.workspaceId !== workspaceId ? null : { ...cur, status, statusReason: reason, updatedAt: now },
    );
    if (!next) throw new ConnectionError(`no connection ${id}`, 'NOT_FOUND');
    return viewOf(next);
  }

  /**
   * Marks the connection broken (a revoked grant) unless it already is, deciding inside the store write: jobs of
   * one connection failing together — in this process or another — make one transition and one
   * `broken` event, not one each. True when this call made the change.
   */
  async markBroken(id: string, reason: string): Promise<boolean> {
    const now = new Date().toISOString();
    const next = await this.transition(id, 'broken', (cur) => (cur.status === 'broken' ? null : { ...cur, status: 'broken', statusReason: reason, updatedAt: now }));
    if (!next) return false;
    this.hub.log.warn({ connectionId: id, reason }, 'connection marked broken');
    return true;
  }

  async remove(id: string, workspaceId?: string): Promise<void> {
    await this.getRecord(id, workspaceId);
    const events = recordOutbox((was: ConnectionRecord) => changeEvent(this.hub, was, 'removed', this.actor));
    await this.hub.store.deleteDoc<ConnectionRecord>(CONNECTIONS, id, events);
    publishCommitted(this.hub, events.entries);
  }

  /** Re-seals every connection whose secrets are under an older key. Returns how many changed. */
  async rotateKeys(): Promise<{ rotated: number; total: number; failed: Array<{ id: string; reason: string }> }> {
    let rotated = 0;
    let total = 0;
    const failed: Array<{ id: string; reason: string }> = [];
    let afterId: string | undefined;
    for (;;) {
      const page = await this.docs.find<ConnectionRecord>(CONNECTIONS, {}, { limit: 200, ...(afterId ? { afterId } : {}) });
      if (page.length === 0) break;
      for (const rec of page) {
        total++;
        if (!rec.sealed || Keyring.kidOf(rec.sealed) === this.keyring.currentId) continue;
        try {
          const plain = this.keyring.open(rec.sealed, rec.id);
          await this.commit({ ...rec, sealed: this.keyring.seal(plain, rec.id) }, 'keys_rotated');
          rotated++;
        } catch (err) {
          failed.push({ id: rec.id, reason: (err as Error).message });
        }
      }
      afterId = page[page.length - 1]!.id;
    }
    return { rotated, total, failed };
  }

  /** The context connector code gets for one connection: persist refreshed tokens, mark it broken. */
  contextFor(id: string): ConnectorContext {
    return {
      hub: this.hub,
      // A refreshed token is routine, not an admin change: saved without an event. Only the config and secret
      // fields are written over the record as it is at the write: a status change that landed meanwhile (marked
      // broken by another job, disabled by an admin) must not be undone by a token refresh that read it before.
      saveSecrets: async (patch) => {
        const next = await this.merged(id, patch);
        await this.hub.store.updateDoc<ConnectionRecord>(
          CONNECTIONS,
          id,
          (cur) => ({ ...cur, config: next.config, secretFields: next.secretFields, sealed: next.sealed, updatedAt: next.updatedAt }),
          () => [],
        );
      },
      markBroken: async (reason) => {
        await this.markBroken(id, reason);
      },
    };
  }
}

/** Validates a connection config; the error lists the fields (never their values). */
export function parseConfig(connector: Connector, input: Record<string, unknown>): Record<string, unknown> {
  const r = connector.configSchema.safeParse(input);
  if (!r.success) {
    const fields = r.error.issues.map((i) => ({ field: i.path.join('.') || '(root)', message: i.message }));
    throw new ConnectionError(
      `invalid ${connector.id} config: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`,
      'VALIDATION_FAILED',
      fields,
    );
  }
  return r.data as Record<string, unknown>;
}
