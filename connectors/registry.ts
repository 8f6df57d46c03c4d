/**
 * The explicit list of connectors. Adding one means writing its folder and adding one line here; nothing
 * is discovered by scanning directories.
 */
import { dropboxConnector } from './dropbox/index.js';
import { googleDriveConnector } from './google-drive/index.js';
import type { Connector } from './types.js';
import { webhookConnector } from './webhook/index.js';

export const CONNECTORS: Connector[] = [
  webhookConnector as unknown as Connector,
  googleDriveConnector as unknown as Connector,
  dropboxConnector as unknown as Connector,
];

export function getConnector(id: string): Connector | undefined {
  return CONNECTORS.find((c) => c.id === id);
}
