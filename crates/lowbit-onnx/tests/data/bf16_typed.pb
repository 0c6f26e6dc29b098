*€ÿþB
bf16_typed