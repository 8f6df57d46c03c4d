/** A conversation transcript as Markdown, rendered from the store (never patched), so a re-render is idempotent. */
import type { Conversation, Message } from '../../core/domain.js';

export function renderTranscript(conv: Conversation, messages: Message[], names: Map<string, string>): string {
  const title = conv.title ?? `Conversation between ${conv.members.map((m) => names.get(m) ?? m).join(' and ')}`;
  const lines = [`# ${title}`, '', `Conversation ${conv.id} · created ${conv.createdAt}`, ''];
  for (const m of messages) {
    const who = names.get(m.senderId) ?? m.senderId;
    if (m.deleted) lines.push(`- **${who}** · ${m.createdAt} · #${m.seq}: _message deleted_`);
    else {
      const edited = m.editedAt ? ` (edited ${m.editedAt})` : '';
      const files = m.attachments?.length ? ` [attachments: ${m.attachments.join(', ')}]` : '';
      lines.push(`- **${who}** · ${m.createdAt} · #${m.seq}${edited}: ${m.text.replace(/\r?\n/g, '\n  ')}${files}`);
    }
  }
  return lines.join('\n') + '\n';
}

/** A file name that is safe on both Drive and Dropbox. */
export function transcriptName(conv: Conversation): string {
  const base = [...(conv.title ?? 'conversation')]
    .map((ch) => (ch.charCodeAt(0) < 32 || '\\/:*?"<>|'.includes(ch) ? '_' : ch))
    .join('')
    .slice(0, 80);
  return `${base} (${conv.id}).md`;
}
