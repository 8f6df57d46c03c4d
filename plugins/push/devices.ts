/**
 * Push devices: one document per FCM registration token, keyed by the token's SHA-256 (tokens are long and
 * opaque; the hash makes a fixed-size id and keeps the token out of ids and logs). A token belongs to one
 * user at a time: registering it again, by anyone, moves it to the latest caller (a shared tablet).
 */
import { createHash } from 'node:crypto';
import type { DocumentStore } from '../../core/store/port.js';

export const DEVICES_COLLECTION = 'push_devices';

export type Platform = 'ios' | 'android' | 'web';

export interface Device {
  id: string;
  token: string;
  platform: Platform;
  userId: string;
  workspaceId: string;
  createdAt: string;
  updatedAt: string;
}

export function deviceId(token: string): string {
  return `dev_${createHash('sha256').update(token).digest('hex').slice(0, 40)}`;
}

/** Registers (or moves, or refreshes) a token; `created` is false when it was known already. */
export async function registerDevice(
  docs: DocumentStore,
  fields: { token: string; platform: Platform; userId: string; workspaceId: string },
): Promise<{ device: Device; created: boolean }> {
  const id = deviceId(fields.token);
  const now = new Date().toISOString();
  const existing = await docs.get<Device>(DEVICES_COLLECTION, id);
  const device: Device = { id, ...fields, createdAt: existing?.createdAt ?? now, updatedAt: now };
  await docs.put(DEVICES_COLLECTION, id, device);
  return { device, created: !existing };
}

export function devicesOf(docs: DocumentStore, userId: string): Promise<Device[]> {
  return docs.find<Device>(DEVICES_COLLECTION, { userId });
}

/** Removes a token only when it belongs to `userId`; false otherwise (or when unknown). */
export async function removeOwnDevice(docs: DocumentStore, userId: string, token: string): Promise<boolean> {
  const id = deviceId(token);
  const existing = await docs.get<Device>(DEVICES_COLLECTION, id);
  if (!existing || existing.userId !== userId) return false;
  return docs.delete(DEVICES_COLLECTION, id);
}

/** The API's view of a device: never the token itself. */
export function publicDevice(d: Device): Omit<Device, 'token' | 'userId' | 'workspaceId'> {
  return { id: d.id, platform: d.platform, createdAt: d.createdAt, updatedAt: d.updatedAt };
}
