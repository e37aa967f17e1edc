import { readFileSync } from 'node:fs';

/** The fenced code blocks of a Markdown file, with their language. */
export function codeBlocks(file: string): { lang: string; text: string }[] {
  const md = readFileSync(file, 'utf8');
  const out: { lang: string; text: string }[] = [];
  const re = /^( *)```(\w*)\n([\s\S]*?)^\1```$/gm;
  for (let m = re.exec(md); m; m = re.exec(md)) {
    const indent = m[1]!.length;
    const text = m[3]!
      .split('\n')
      .map((l) => l.slice(indent))
      .join('\n');
    out.push({ lang: m[2]!, text });
  }
  return out;
}

/**
 * The commands of a shell block as argument lists: line continuations joined, comments dropped,
 * single and double quotes removed (no expansion: `$(...)` stays as written).
 */
export function shellCommands(block: string): string[][] {
  const lines = block.replace(/\\\n\s*/g, ' ').split('\n');
  const out: string[][] = [];
  for (const line of lines) {
    const words: string[] = [];
    let cur = '';
    let quote: string | undefined;
    let has = false;
    for (const ch of line) {
      if (quote) {
        if (ch === quote) quote = undefined;
        else cur += ch;
      } else if (ch === "'" || ch === '"') {
        quote = ch;
        has = true;
      } else if (ch === '#' && !has && cur === '') break;
      else if (/\s/.test(ch)) {
        if (has || cur) words.push(cur);
        cur = '';
        has = false;
      } else {
        cur += ch;
        has = true;
      }
    }
    if (has || cur) words.push(cur);
    if (words.length) out.push(words);
  }
  return out;
}
