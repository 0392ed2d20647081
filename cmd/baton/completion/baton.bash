# bash completion for baton, printed by `baton completion bash`.
# baton lists its own commands and flags (urfave/cli's
# --generate-bash-completion), so the completions follow the binary.
# Nothing is completed by baton after `--` (the proxy's own command line):
# there bash completes file names.
_baton() {
    local cur words cword w
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -n "=:" || return
    else
        COMPREPLY=()
        cur=${COMP_WORDS[COMP_CWORD]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    for w in "${words[@]:1:cword-1}"; do
        [[ $w == -- ]] && return 0
    done
    # The word being completed goes last when it is a flag, but never as
    # `--`: after `--` baton would not complete but run the command.
    local req=("${words[@]:1:cword-1}")
    if [[ $cur == -- ]]; then
        req+=(-)
    elif [[ $cur == -* ]]; then
        req+=("$cur")
    fi
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${words[0]}" "${req[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _baton baton
