"""kopf handlers, one concern per module; ``athenic_operator.main`` registers them."""
