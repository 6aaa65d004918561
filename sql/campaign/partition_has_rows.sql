select exists(select from {part})
