#compdef rk

_rk_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _RK_COMPLETE=complete_zsh rk)
}

compdef _rk_completion rk
