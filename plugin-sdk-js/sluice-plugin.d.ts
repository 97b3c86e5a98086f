// TypeScript declarations for sluice-plugin.js (sluice:filter@0.1.4, componentize-js).
// The shapes are the WIT's (wit/sluice-filter.wit) as componentize-js hands them over:
// records as objects with camelCase fields, options as `T | undefined`, `list<u8>` as
// Uint8Array, u64/s64 as bigint (the SDK's `view` turns sizes and offsets into numbers).

/** A reply to the client: `{ code: 550, enhanced: '5.7.1', text: 'not welcome' }`. */
export interface Reply { code: number; enhanced: string; text: string; }

/** A hook's decision. */
export type Verdict =
  | { tag: 'continue' } | { tag: 'accept' } | { tag: 'discard' }
  | { tag: 'reject'; val: Reply } | { tag: 'tempfail'; val: Reply }
  | { tag: 'quarantine'; val: string };

/** What a hook may return: a verdict, one of its names, or undefined (no opinion). */
export type HookResult = Verdict | 'continue' | 'accept' | 'discard' | undefined | null | void;

export interface TlsInfo { version: string; cipher: string; }
/** Facts about the client's SMTP session. */
export interface Session {
  listener: string; clientIp: string; clientPort: number; helo: string;
  tls?: TlsInfo; authUser?: string; transactionId: string;
}
export interface EsmtpParam { keyword: string; value?: string; }
/** An envelope address (empty for the null sender) with its ESMTP parameters. */
export interface Address { address: string; params: EsmtpParam[]; }
export interface Envelope { sender: Address; recipients: Address[]; }
export interface Header { name: string; value: string; }
/** A received message: header fields unfolded, and the raw bytes (CRLF). */
export interface Message { headers: Header[]; raw: Uint8Array; }
export interface Symbol { name: string; score: number; detail: string; }
export interface DeliveryReport {
  queueId: string; sender: string; recipient: string;
  status: 'delivered' | 'deferred' | 'failed'; [field: string]: unknown;
}
export interface BounceText { subject: string; text: string; html?: string; }
export type BounceRequest = Record<string, unknown>;

export const CONTINUE: Readonly<{ tag: 'continue' }>;
export function accept(): Verdict;
export function reject(code: number, enhanced: string, text: string): Verdict;
export function tempfail(code: number, enhanced: string, text: string): Verdict;
export function discard(): Verdict;
export function quarantine(reason: string): Verdict;

/** What checkMessage returns to edit headers or add spam-score symbols. */
export interface MessageVerdict {
  verdict: Verdict;
  addHeaders: Header[];
  removeHeaders: string[];
  symbols: Symbol[];
  withVerdict(v: Verdict): MessageVerdict;
  addHeader(name: string, value: string): MessageVerdict;
  removeHeader(name: string): MessageVerdict;
  symbol(name: string, score: number, detail?: string): MessageVerdict;
}
export function messageVerdict(verdict?: Verdict): MessageVerdict;

/** A bad setting; the message names the key. */
export class ConfigError extends Error {
  constructor(key: string, problem: string);
  key: string;
  problem: string;
}

/** The operator's settings ([plugin.NAME.config]); each getter returns `fallback` when unset
 *  and throws ConfigError for a value of another type. */
export const config: {
  keys(): string[];
  raw(key: string): unknown;
  str(key: string, fallback?: string): string | undefined;
  int(key: string, fallback?: number): number | undefined;
  float(key: string, fallback?: number): number | undefined;
  bool(key: string, fallback?: boolean): boolean | undefined;
  list(key: string, fallback?: string[]): string[] | undefined;
  require(key: string, kind?: 'str' | 'int' | 'float' | 'bool' | 'list'): unknown;
  denyUnknown(known: string[]): void;
};

export function localPart(address: string): string;
export function domain(address: string): string;
export function domainIs(address: string, name: string): boolean;
/** The first value of header field `name` (case-insensitive), or undefined when absent. */
export function header(message: Message, name: string): string | undefined;
/** Every value of header field `name`, in order ([] when absent). */
export function headers(message: Message, name: string): string[];
/** The raw body after the header section, as text (not MIME-decoded: see `view`). */
export function bodyText(message: Message): string;
export const log: {
  debug(text: unknown): void; info(text: unknown): void;
  warn(text: unknown): void; error(text: unknown): void;
};
/** The host's clock, milliseconds since the Unix epoch. */
export function nowMs(): number;

/** One MIME part of the parsed message. */
export interface Part {
  index: number; parent?: number; depth: number;
  kind: 'text' | 'html' | 'binary' | 'multipart' | 'message';
  contentType: string; params: [string, string][];
  disposition?: string; filename?: string; charset?: string; transferEncoding?: string;
  size: number; rawOffset: number; rawLength: number; attachment: boolean;
}
/** An attachment, described without its bytes. */
export interface Attachment {
  part: number; name?: string; declaredType: string; sniffedType?: string;
  size: number; sha256: string;
}
/** A link of a text or HTML part. */
export interface Link { url: string; host: string; registrableDomain?: string; part: number; }
export interface Mailbox { name?: string; address?: string; }
export interface HeaderSummary { from: Mailbox[]; to: Mailbox[]; subject?: string; date?: number; }

/** The message of checkMessage as Sluice parsed it (WIT 0.1.3). */
export const view: {
  parts(): Part[];
  text(part: number): string | undefined;
  visibleText(part: number): string | undefined;
  bodyText(): string;
  attachments(): Attachment[];
  attachmentBytes(part: number, offset?: number, length?: number): Uint8Array | undefined;
  readAttachment(attachment: Attachment): Uint8Array;
  links(): Link[];
  summary(): HeaderSummary;
  rawSize(): number;
  rawSlice(offset: number, length: number): Uint8Array;
  limitsHit(): Array<'parts' | 'depth' | 'text' | 'links'>;
};

/** A plugin: its name, and only the hooks it needs. `init` reads the settings once per
 *  transaction; its result is every hook's last argument. */
export interface PluginDefinition<S = undefined> {
  name: string;
  version?: string;
  init?(settings: typeof config): S;
  verifySender?(session: Session, sender: Address, settings: S): HookResult;
  checkRecipient?(session: Session, envelope: Envelope, recipient: Address, settings: S): HookResult;
  checkMessage?(session: Session, envelope: Envelope, message: Message, settings: S): HookResult | MessageVerdict;
  onDelivery?(report: DeliveryReport, settings: S): void;
  renderBounce?(request: BounceRequest, settings: S): BounceText | undefined;
}
/** The `hooks` export componentize-js builds the component from. */
export function definePlugin<S = undefined>(plugin: PluginDefinition<S>): unknown;
