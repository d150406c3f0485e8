/**
 * Text someone else wrote (a host's answer, a pull request's files), made safe for the operator's terminal:
 * every control character but the line break and the tab is shown as `?`, so no escape sequence moves
 * the cursor, erases a line or retitles the window; so is every bidi control and line or paragraph separator,
 * which reorder or break what a terminal shows without being control characters.
 */
export const printable = (text: string): string =>
  text.replace(/[^\P{Cc}\n\t]|[\p{Zl}\p{Zp}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu, "?");

/**
 * A text another host sent, for one field of a table's row: printable, its line breaks and tabs as spaces so
 * it can neither start a row of its own nor push the next field away, and cut to `max` characters.
 */
export function oneLine(text: string, max: number): string {
  const cut = text.length > max ? `${text.slice(0, max - 1)}…` : text;
  return printable(cut).replace(/[\n\t]/g, " ");
}
