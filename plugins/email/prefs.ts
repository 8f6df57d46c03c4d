/** Per-user email notification preferences (on/off and the digest delay). */
import type { DocumentStore } from '../../core/store/port.js';

export const EMAIL_PREFS_COLLECTION = 'email_prefs';

export interface EmailPrefs {
  enabled: boolean;
  /** Wait after the first unread message before the digest is sent. */
  delaySeconds: number;
}

/** The user's preferences, or the defaults (on, the configured delay) when they never set any. */
export async function getEmailPrefs(docs: DocumentStore, userId: string, defaultDelaySeconds: number): Promise<EmailPrefs> {
  const stored = await docs.get<Partial<EmailPrefs>>(EMAIL_PREFS_COLLECTION, userId);
  return { enabled: stored?.enabled ?? true, delaySeconds: stored?.delaySeconds ?? defaultDelaySeconds };
}

export async function updateEmailPrefs(docs: DocumentStore, userId: string, patch: Partial<EmailPrefs>, defaultDelaySeconds: number): Promise<EmailPrefs> {
  // Only what the user chose is stored, so a later change of the configured default still reaches them.
  const stored = (await docs.get<Partial<EmailPrefs>>(EMAIL_PREFS_COLLECTION, userId)) ?? {};
  await docs.put(EMAIL_PREFS_COLLECTION, userId, { ...stored, ...patch });
  return getEmailPrefs(docs, userId, defaultDelaySeconds);
}
