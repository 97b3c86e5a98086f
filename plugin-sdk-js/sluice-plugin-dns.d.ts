// TypeScript declarations for sluice-plugin-dns.js (the `dns` capability).
export class DnsError extends Error {
  lookup: string;
  kind: 'nxdomain' | 'no-records' | 'temporary' | 'invalid';
  detail: string;
}
export interface Mx { preference: number; exchange: string; }
export const dns: {
  a(name: string): string[];
  aaaa(name: string): string[];
  txt(name: string): string[];
  ptr(address: string): string[];
  mx(name: string): Mx[];
};
