"""Speed measurement: our engine against a raw llama.cpp loop in the same process."""
