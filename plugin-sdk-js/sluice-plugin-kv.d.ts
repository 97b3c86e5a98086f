// TypeScript declarations for sluice-plugin-kv.js (the `kv` capability).
export const kv: {
  get(key: string): Uint8Array | undefined;
  getText(key: string): string | undefined;
  counter(key: string): number;
  set(key: string, value: Uint8Array | string, ttlSecs?: number): void;
  increment(key: string, delta?: number, ttlSecs?: number): number;
  delete(key: string): boolean;
  compareAndSet(key: string, expected: Uint8Array | string | undefined, value: Uint8Array | string, ttlSecs?: number): boolean;
};
