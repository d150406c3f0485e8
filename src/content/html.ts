/** Most parse errors listed for one document; the rest are counted. */
const MAX_LISTED = 10;

/**
 * An HTML page's parse errors as the HTML standard's tokenizer names them (parse5: `missing-doctype`,
 * `duplicate-attribute`, `eof-in-tag`, …), one line each with its position; empty when a browser reads the
 * page without error recovery. parse5 loads on first use: only hosts with an HTML check need it.
 */
export async function htmlProblems(text: string): Promise<string[]> {
  const { parse } = await import("parse5");
  const found: string[] = [];
  parse(text, {
    onParseError: (e) => {
      found.push(`line ${e.startLine}, column ${e.startCol}: ${e.code}`);
    },
  });
  if (found.length <= MAX_LISTED) return found;
  return [...found.slice(0, MAX_LISTED), `and ${found.length - MAX_LISTED} more parse errors`];
}
