/** Env values both dotenv and systemd's EnvironmentFile= carry (test/env-write.test.ts, test/system/). */
export const HOSTILE_VALUES: Record<string, string> = {
  HASH: "a-long-secret-prefix#and the rest",
  HASH_FIRST: "#starts-with-a-hash",
  DOLLAR: "$HOME and ${HOME} and $(id)",
  SPACES: "  leading and trailing spaces  ",
  DOUBLE_QUOTES: 'say "hello" here',
  SINGLE_QUOTE: "it's a secret",
  SINGLE_AND_DOLLAR: "it's $5 #1 `cmd`",
  BACKSLASH: "back\\slash\\n not a newline",
  BACKSLASH_DOUBLE_QUOTE: 'a\\"b',
  BACKTICKS: "`echo pwned`",
  EQUALS: "a=b==c",
  QUOTED_LOOKING: "'already quoted'",
  DOUBLE_QUOTED_LOOKING: '"already quoted"',
  EXPORT: "export X=1",
  UNICODE: "sécret-ключ-🔑",
  EMPTY: "",
};
