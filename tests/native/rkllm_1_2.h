/* The structs of rkllm.h for runtime 1.2.1 - 1.2.3 (LP64), as the header declares them.
 * 1.2.3 only renamed RKLLMMultiModelInput to RKLLMMultiModalInput; the layout is unchanged. */
#ifndef RK_FAKE_RKLLM_1_2_H
#define RK_FAKE_RKLLM_1_2_H
#include "rkllm_common.h"

#define FAKE_RKLLM_API 12

typedef struct {
    const char* model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    int32_t n_keep;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
    bool skip_special_token;
    bool is_async;
    const char* img_start;
    const char* img_end;
    const char* img_content;
    RKLLMExtendParam extend_param;
} RKLLMParam;

typedef struct {
    char* prompt;
    float* image_embed;
    size_t n_image_tokens;
    size_t n_image;
    size_t image_width;
    size_t image_height;
} RKLLMMultiModalInput;

typedef struct {
    const char* role;
    bool enable_thinking;
    RKLLMInputType input_type;
    union {
        const char* prompt_input;
        RKLLMEmbedInput embed_input;
        RKLLMTokenInput token_input;
        RKLLMMultiModalInput multimodal_input;
    };
} RKLLMInput;

typedef struct {
    RKLLMInferMode mode;
    RKLLMLoraParam* lora_params;
    RKLLMPromptCacheParam* prompt_cache_params;
    int keep_history;
} RKLLMInferParam;

RKLLMParam rkllm_createDefaultParam(void);
int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback);

#include "rkllm_funcs.h"

#endif
