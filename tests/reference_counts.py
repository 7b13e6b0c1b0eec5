"""Parameter counts of Lit-GPT 8641822, reproduced by hand and with its own classes
(docs/reference.md, "Parameter counts"): facts of the reference that tests compare the built models against.
"""

# model -> total parameters of the base model
TOTALS = {
    "phi-1_5": 1_418_270_720,
    "stablelm-base-alpha-3b": 3_637_321_728,
    "Llama-2-7b-hf": 6_738_415_616,
    "Llama-2-13b-hf": 13_015_864_320,
    "Llama-2-70b-hf": 68_976_648_192,
    "CodeLlama-13b-hf": 13_016_028_160,
    "CodeLlama-34b-hf": 33_743_970_304,
    "falcon-40b": 41_835_970_560,
    "pythia-70m": 70_426_624,
}

# (model, method) -> trainable parameters with the finetune scripts' defaults (LoRA r=8 on q and v;
# adapters with prompt length 10 from layer 2)
TRAINABLE = {
    ("phi-1_5", "lora"): 1_572_864,
    ("stablelm-base-alpha-3b", "lora"): 2_097_152,
    ("stablelm-base-alpha-3b", "adapter"): 573_888,
    ("stablelm-base-alpha-3b", "adapter_v2"): 2_125_248,
    ("Llama-2-7b-hf", "lora"): 4_194_304,
    ("Llama-2-7b-hf", "adapter"): 1_229_760,
    ("Llama-2-7b-hf", "adapter_v2"): 4_279_744,
    ("Llama-2-13b-hf", "lora"): 6_553_600,
    ("falcon-40b", "lora"): 12_042_240,
    ("Llama-2-70b-hf", "lora"): 16_384_000,
    ("CodeLlama-34b-hf", "lora"): 9_830_400,
    ("pythia-70m", "lora"): 98_304,
}
