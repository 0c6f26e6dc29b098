
*	€xÿ÷€øB	f16_typed