/**
 * Text someone else wrote (a host's answer, a pull request's files), made safe for the operator's terminal:
 * every control character but the line break and the tab is shown as `?`, so no escape sequence moves
 * the cursor, erases a line or retitles the window.
 */
export const printable = (text: string): string => text.replace(/[^\P{Cc}\n\t]/gu, "?");
