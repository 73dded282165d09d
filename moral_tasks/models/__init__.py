"""lm-eval model types of moral-ambiguity, registered lazily by :mod:`moral_tasks.lm_eval_plugin`."""

MODELS = {
    "hf-encoder-classifier": "moral_tasks.models.encoder_classifier:EncoderClassifierLM",
    "openai-chat-logprobs": "moral_tasks.models.openai_chat:OpenAIChatLogprobs",
    "openai-chat-sampling": "moral_tasks.models.openai_chat:OpenAIChatSampling",
}
