import { leaves } from "./parse.js";
import { type CommandSpec, isGroup, type OptionSpec } from "./spec.js";

/**
 * The bash completion script, written from the declarations: commands, subcommands, each command's
 * options, the values of options with choices, file names for path options, and `help`'s command words.
 * Plain bash (no bash-completion helpers needed).
 */

const words = (list: readonly string[]) => list.join(" ");

export function bashCompletion(commands: readonly CommandSpec[]): string {
  const options = new Map<string, OptionSpec>();
  for (const leaf of leaves(commands))
    for (const o of leaf.options) if (!options.has(o.name)) options.set(o.name, o);
  const valued = [...options.values()].filter((o) => o.arg);
  const optionWords = (list: readonly OptionSpec[]) => words([...list.map((o) => `--${o.name}`), "--help"]);

  // After a command path: its subcommands, or the choices of a leaf's first argument (completion bash).
  const next = [
    `    "") r="${words(commands.map((c) => c.name))}" ;;`,
    ...commands.flatMap((c) =>
      isGroup(c)
        ? [`    "${c.name}") r="${words(c.subcommands.map((s) => s.name))}" ;;`]
        : c.args[0]?.choices
          ? [`    "${c.name}") r="${words(c.args[0].choices)}" ;;`]
          : [],
    ),
  ];
  const opts = commands.flatMap((c) =>
    isGroup(c)
      ? [
          `    "${c.name}") r="--help" ;;`,
          ...c.subcommands.map((s) => `    "${c.name} ${s.name}") r="${optionWords(s.options)}" ;;`),
        ]
      : [`    "${c.name}") r="${optionWords(c.options)}" ;;`],
  );
  const paths = valued.filter((o) => o.path && !o.choices).map((o) => `--${o.name}`);
  const values = [
    ...valued
      .filter((o) => o.choices)
      .map((o) => `    --${o.name}) COMPREPLY=($(compgen -W "${words(o.choices ?? [])}" -- "$cur")) ;;`),
    `    ${paths.join("|")}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;`,
  ];

  return `# bash completion for deploy-agent, written by \`deploy-agent completion bash\` from its command declarations.
# Install: deploy-agent completion bash > /usr/share/bash-completion/completions/deploy-agent
# (or: source <(deploy-agent completion bash) in ~/.bashrc).

# The words that may follow a command path ("" for the first word).
_deploy_agent_next() {
  local r=""
  case "$1" in
${next.join("\n")}
  esac
  printf '%s' "$r"
}

# The options of a command path.
_deploy_agent_opts() {
  local r=""
  case "$1" in
    "") r="--help --version" ;;
${opts.join("\n")}
  esac
  printf '%s' "$r"
}

# Whether an option takes a value (the next word).
_deploy_agent_takes_value() {
  case "$1" in
    ${valued.map((o) => `--${o.name}`).join("|")}) return 0 ;;
  esac
  return 1
}

_deploy_agent() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" word option="" i=1 ended=0 help=0
  COMPREPLY=()
  # The words before the cursor: command words extend the path; an option's value is skipped, and when
  # the cursor is on it, that option's values are what completes.
  while ((i < COMP_CWORD)); do
    word="\${COMP_WORDS[i]}"
    if ((!ended)) && [[ $word == -- ]]; then
      ended=1
    elif ((!ended)) && [[ $word == -* ]]; then
      if [[ $word != *=* ]] && _deploy_agent_takes_value "$word"; then
        # COMP_WORDBREAKS splits --opt=value into --opt, = and value.
        if [[ \${COMP_WORDS[i + 1]} == = ]]; then ((i++)); fi
        if ((i + 1 == COMP_CWORD)); then option="$word"; fi
        ((i++))
      fi
    elif [[ -z $path && $help == 0 && $word == help ]]; then
      help=1
    elif ((help)) && [[ -n $path && " ${words(commands.filter(isGroup).map((g) => g.name))} " != *" $path "* ]]; then
      : # help takes a command and a subcommand, no more
    elif [[ " $(_deploy_agent_next "$path") " == *" $word "* ]]; then
      path="\${path:+$path }$word"
    fi
    ((i++))
  done
  if [[ -n $option ]]; then
    # Its choices, file names for a path; nothing for free text.
    [[ $cur == = ]] && cur=""
    case "$option" in
${values.join("\n")}
    esac
  elif [[ $cur == -* ]] && ((!ended)); then
    ((help)) && path=help
    COMPREPLY=($(compgen -W "$(_deploy_agent_opts "$path")" -- "$cur"))
  elif ((!help)) || [[ -z $path || " ${words(commands.filter(isGroup).map((g) => g.name))} " == *" $path "* ]]; then
    COMPREPLY=($(compgen -W "$(_deploy_agent_next "$path")" -- "$cur"))
  fi
  return 0
}

complete -F _deploy_agent deploy-agent
`;
}
