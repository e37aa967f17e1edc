/**
 * A string-like object that counts every character it hands out, to show that a parser's work
 * grows linearly with its input without timing anything. The code under test only reaches the
 * string through these members, so one it starts using that is missing here makes a test
 * throw rather than pass unseen.
 */
export class CountingString {
  reads = 0;
  constructor(private readonly s: string) {}

  /** This object typed as the string it stands for, to hand to the code under test. */
  get asString(): string {
    return this as unknown as string;
  }

  get length(): number {
    return this.s.length;
  }

  charCodeAt(i: number): number {
    this.reads++;
    return this.s.charCodeAt(i);
  }

  slice(start?: number, end?: number): string {
    const out = this.s.slice(start, end);
    this.reads += out.length;
    return out;
  }

  startsWith(prefix: string, at?: number): boolean {
    this.reads += prefix.length;
    return this.s.startsWith(prefix, at);
  }

  indexOf(search: string, from = 0): number {
    const at = this.s.indexOf(search, from);
    this.reads += (at === -1 ? this.s.length : at + search.length) - Math.min(from, this.s.length);
    return at;
  }

  /** Joining or concatenating hands out the whole string. */
  toString(): string {
    this.reads += this.s.length;
    return this.s;
  }
}
