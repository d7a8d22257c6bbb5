/* Prints sizeof and offsetof of every struct and field of one rkllm.h version, one per line:
 *   STRUCT <name> <size>   and   FIELD <struct>.<field> <offset> <size>
 * Built with -DRKLLM_HEADER=...; the layout test compares each line with the ctypes mirror. */
#include RKLLM_HEADER
#include <stdio.h>

#define S(T) printf("STRUCT %s %zu\n", #T, sizeof(T))
#define F(T, f) printf("FIELD %s.%s %zu %zu\n", #T, #f, offsetof(T, f), sizeof(((T*)0)->f))

int main(void) {
    S(RKLLMExtendParam);
    F(RKLLMExtendParam, base_domain_id); F(RKLLMExtendParam, embed_flash); F(RKLLMExtendParam, enabled_cpus_num);
    F(RKLLMExtendParam, enabled_cpus_mask); F(RKLLMExtendParam, n_batch); F(RKLLMExtendParam, use_cross_attn);
    F(RKLLMExtendParam, reserved);

    S(RKLLMParam);
    F(RKLLMParam, model_path); F(RKLLMParam, max_context_len); F(RKLLMParam, max_new_tokens); F(RKLLMParam, top_k);
    F(RKLLMParam, n_keep); F(RKLLMParam, top_p); F(RKLLMParam, temperature); F(RKLLMParam, repeat_penalty);
    F(RKLLMParam, frequency_penalty); F(RKLLMParam, presence_penalty); F(RKLLMParam, mirostat);
    F(RKLLMParam, mirostat_tau); F(RKLLMParam, mirostat_eta); F(RKLLMParam, skip_special_token);
    F(RKLLMParam, is_async); F(RKLLMParam, extend_param);
#if FAKE_RKLLM_API == 13
    F(RKLLMParam, ignore_eos_token);
#else
    F(RKLLMParam, img_start); F(RKLLMParam, img_end); F(RKLLMParam, img_content);
#endif

    S(RKLLMLoraAdapter);
    F(RKLLMLoraAdapter, lora_adapter_path); F(RKLLMLoraAdapter, lora_adapter_name); F(RKLLMLoraAdapter, scale);
    S(RKLLMEmbedInput);
    F(RKLLMEmbedInput, embed); F(RKLLMEmbedInput, n_tokens);
    S(RKLLMTokenInput);
    F(RKLLMTokenInput, input_ids); F(RKLLMTokenInput, n_tokens);

    S(RKLLMMultiModalInput);
    F(RKLLMMultiModalInput, prompt);
#if FAKE_RKLLM_API == 13
    F(RKLLMMultiModalInput, image); F(RKLLMMultiModalInput, image.image_embed); F(RKLLMMultiModalInput, image.n_image_tokens);
    F(RKLLMMultiModalInput, image.n_image); F(RKLLMMultiModalInput, image.image_start); F(RKLLMMultiModalInput, image.image_end);
    F(RKLLMMultiModalInput, image.image_content); F(RKLLMMultiModalInput, image.image_width);
    F(RKLLMMultiModalInput, image.image_height);
    F(RKLLMMultiModalInput, video); F(RKLLMMultiModalInput, video.video_embed); F(RKLLMMultiModalInput, video.n_frame_tokens);
    F(RKLLMMultiModalInput, video.n_frame_per_video); F(RKLLMMultiModalInput, video.n_video);
    F(RKLLMMultiModalInput, video.video_start); F(RKLLMMultiModalInput, video.video_end);
    F(RKLLMMultiModalInput, video.video_content); F(RKLLMMultiModalInput, video.frame_width);
    F(RKLLMMultiModalInput, video.frame_height);
#else
    F(RKLLMMultiModalInput, image_embed); F(RKLLMMultiModalInput, n_image_tokens); F(RKLLMMultiModalInput, n_image);
    F(RKLLMMultiModalInput, image_width); F(RKLLMMultiModalInput, image_height);
#endif

    S(RKLLMInput);
    F(RKLLMInput, role); F(RKLLMInput, enable_thinking); F(RKLLMInput, input_type); F(RKLLMInput, prompt_input);
    F(RKLLMInput, embed_input); F(RKLLMInput, token_input); F(RKLLMInput, multimodal_input);

    S(RKLLMLoraParam);
    F(RKLLMLoraParam, lora_adapter_name);
    S(RKLLMPromptCacheParam);
    F(RKLLMPromptCacheParam, save_prompt_cache); F(RKLLMPromptCacheParam, prompt_cache_path);
    S(RKLLMCrossAttnParam);
    F(RKLLMCrossAttnParam, encoder_k_cache); F(RKLLMCrossAttnParam, encoder_v_cache); F(RKLLMCrossAttnParam, encoder_mask);
    F(RKLLMCrossAttnParam, encoder_pos); F(RKLLMCrossAttnParam, num_tokens);

    S(RKLLMInferParam);
    F(RKLLMInferParam, mode); F(RKLLMInferParam, lora_params); F(RKLLMInferParam, prompt_cache_params);
    F(RKLLMInferParam, keep_history);
#if FAKE_RKLLM_API == 13
    F(RKLLMInferParam, sampling_params); F(RKLLMInferParam, max_new_tokens);
    S(RKLLMSamplingParam);
    F(RKLLMSamplingParam, top_k); F(RKLLMSamplingParam, top_p); F(RKLLMSamplingParam, temperature);
    F(RKLLMSamplingParam, repeat_penalty); F(RKLLMSamplingParam, frequency_penalty); F(RKLLMSamplingParam, presence_penalty);
    F(RKLLMSamplingParam, mirostat); F(RKLLMSamplingParam, mirostat_tau); F(RKLLMSamplingParam, mirostat_eta);
    S(RKLLMCallback);
    F(RKLLMCallback, result_callback); F(RKLLMCallback, result_userdata); F(RKLLMCallback, tokenizer_callback);
    F(RKLLMCallback, tokenizer_userdata); F(RKLLMCallback, embed_callback); F(RKLLMCallback, embed_userdata);
#endif

    S(RKLLMResultLastHiddenLayer);
    F(RKLLMResultLastHiddenLayer, hidden_states); F(RKLLMResultLastHiddenLayer, embd_size);
    F(RKLLMResultLastHiddenLayer, num_tokens);
    S(RKLLMResultLogits);
    F(RKLLMResultLogits, logits); F(RKLLMResultLogits, vocab_size); F(RKLLMResultLogits, num_tokens);
    S(RKLLMPerfStat);
    F(RKLLMPerfStat, prefill_time_ms); F(RKLLMPerfStat, prefill_tokens); F(RKLLMPerfStat, generate_time_ms);
    F(RKLLMPerfStat, generate_tokens); F(RKLLMPerfStat, memory_usage_mb);
    S(RKLLMResult);
    F(RKLLMResult, text); F(RKLLMResult, token_id); F(RKLLMResult, last_hidden_layer); F(RKLLMResult, logits);
    F(RKLLMResult, perf);
    return 0;
}
