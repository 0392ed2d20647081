#compdef baton
# zsh completion for baton, printed by `baton completion zsh`.
# baton lists its own commands and flags (urfave/cli's
# --generate-bash-completion), so the completions follow the binary.
# After `--` (the proxy's own command line) zsh completes file names.

_baton() {
  local -a opts req
  local cur=${words[CURRENT]}
  if (( ${words[(I)--]} && ${words[(I)--]} < CURRENT )); then
    _files
    return
  fi
  # The word being completed goes last when it is a flag, but never as
  # `--`: after `--` baton would not complete but run the command.
  req=(${words[2,CURRENT-1]})
  if [[ $cur == -- ]]; then
    req+=(-)
  elif [[ $cur == -* ]]; then
    req+=($cur)
  fi
  opts=("${(@f)$(${words[1]} ${req[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n ${opts[1]} ]]; then
    _describe 'values' opts
  else
    _files
  fi
}

if [[ $zsh_eval_context[-1] == loadautoload ]]; then
  _baton "$@"
else
  compdef _baton baton
fi
