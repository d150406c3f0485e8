import { parseDocument } from "yaml";
import { cinnyConfigProblems } from "./cinny-config.js";
import { htmlProblems } from "./html.js";

/**
 * Content checks a manifest can name for a file (`check: cinny-config`): each returns the problems it finds,
 * none when the content is fine. Adding one is a line here; the file step knows none of them by name.
 */
export const CONTENT_CHECKS = {
  json: {
    what: "valid JSON",
    problems(text: string): string[] {
      try {
        JSON.parse(text);
        return [];
      } catch (err) {
        return [(err as Error).message];
      }
    },
  },
  yaml: {
    what: "valid YAML",
    problems(text: string): string[] {
      const first = parseDocument(text).errors[0];
      return first ? [`line ${first.linePos?.[0].line ?? "?"}: ${first.message.split("\n")[0]}`] : [];
    },
  },
  "cinny-config": { what: "a valid Cinny config", problems: cinnyConfigProblems },
  html: { what: "an HTML document a browser parses without errors", problems: htmlProblems },
} satisfies Record<string, { what: string; problems(text: string): string[] | Promise<string[]> }>;

export type ContentCheck = keyof typeof CONTENT_CHECKS;
export const CONTENT_CHECK_NAMES = Object.keys(CONTENT_CHECKS) as [ContentCheck, ...ContentCheck[]];
