/* A fake librkllmrt.so for tests, built against rkllm_1_2.h or rkllm_1_3.h (-DRKLLM_HEADER=...).
 *
 * It follows the header and the documented callback semantics exactly; only the "model" is fake:
 * - generation echoes the prompt's words, one callback per token (a word, or one piece of a non-ASCII
 *   word: its first multi-byte character is split across two NORMAL callbacks, its second comes as a
 *   WAITING callback without text followed by the whole character);
 * - GET_LAST_HIDDEN_LAYER returns one row per word, derived from the word's bytes, and poisons and
 *   frees the buffer right after the callback (so a caller must copy inside it);
 * - FINISH carries perf figures (memory is the process VmHWM, like the real runtime);
 * - "[[error]]" in the input gives an ERROR callback, "[[crash]]" calls abort();
 * - FAKE_RKLLM_TOKEN_DELAY_MS sets a per-token delay, during which rkllm_abort is honoured within 1 ms;
 * - the KV cache is modelled: keep_history=1 keeps the context across runs, and FINISH reports only the
 *   positions this run prefilled; "[[ctx]]" in the input makes the reply one word, "ctx=" followed by the
 *   "#marker" words of the whole context in order (a fingerprint of what the cache holds);
 * - "[[sampling]]" makes the reply the sampling the run used (1.3: sampling_params when given, else the
 *   init values) and how many times rkllm_init ran in this process;
 * - 1.3 with a tokenizer callback: prompt input is tokenised through it, passed WITHOUT a terminating NUL
 *   (junk follows text_len), and the ids come back as words "t<id>";
 * - FAKE_RKLLM_HIDDEN_EMPTY_FIRST=1: a NORMAL callback without hidden states precedes the one carrying
 *   them (rknn-llm #278).
 * - FAKE_RKLLM_THINKING=1: a run with enable_thinking set answers as Qwen3 does, its reasoning first in a
 *   `<think> ... </think>` block, then the echo (without it, the runtime's template closes the block empty
 *   in the prompt and the reply is the echo alone);
 * - FAKE_RKLLM_RECORD names a file that gets one line per rkllm_set_function_tools call
 *   ("set_function_tools<TAB>system<TAB>tools<TAB>tool_response") and per rkllm_run
 *   ("run<TAB>role<TAB>enable_thinking<TAB>input"), tabs and newlines in the strings escaped as \t, \n.
 * The version is stored the way a shipped build stores it: the init banner is a format string, the
 * version a literal of its own (FAKE_LITERAL, and FAKE_LITERAL2 for a second, conflicting one), and the
 * SDK line (FAKE_SDK) carries it too. Any of them can be left out.
 */
#include RKLLM_HEADER
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char BANNER_FORMAT[] = "I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n";
#ifdef FAKE_LITERAL
__attribute__((used)) static const char VERSION[] = FAKE_LITERAL;
#else
static const char VERSION[] = "unknown";
#endif
#ifdef FAKE_LITERAL2
__attribute__((used)) static const char VERSION2[] = FAKE_LITERAL2;
#endif
#ifdef FAKE_SDK
__attribute__((used)) static const char SDK_LINE[] = "RKLLM SDK (version: " FAKE_SDK " | target: Linux | build: fake0000)";
#endif
static int n_inits; /* rkllm_init calls in this process, reported by "[[sampling]]" */

#define FAKE_DIM 16
#define MAX_WORDS 4096

typedef struct {
    RKLLMParam param;
    char model_path[4096];
    LLMResultCallback callback;
    void* callback_userdata;
#if FAKE_RKLLM_API == 13
    LLMTokenizerCallback tokenizer;
    void* tokenizer_userdata;
#endif
    char* markers; /* the "#..." words of the context, space-separated, in order */
    atomic_int abort_flag;
    atomic_int running;
    int kv_len;
    int paused;
    long delay_us;
} FakeLLM;

/* Writes `s` to `f` with tabs, newlines and backslashes escaped, so each record stays one line. */
static void put_escaped(FILE* f, const char* s) {
    for (; s && *s; s++) {
        if (*s == '\n') fputs("\\n", f);
        else if (*s == '\t') fputs("\\t", f);
        else if (*s == '\\') fputs("\\\\", f);
        else fputc(*s, f);
    }
}

/* Appends one record (a name and up to three fields) to FAKE_RKLLM_RECORD, if it is set. */
static void record(const char* name, const char* a, const char* b, const char* c) {
    const char* path = getenv("FAKE_RKLLM_RECORD");
    FILE* f = path ? fopen(path, "a") : NULL;
    if (!f) return;
    fputs(name, f);
    const char* fields[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        fputc('\t', f);
        put_escaped(f, fields[i]);
    }
    fputc('\n', f);
    fclose(f);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static float vm_hwm_mb(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    if (!f) return 0.0f;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb / 1024.0f;
}

/* Sleeps the per-token delay in 1 ms slices; returns 1 if an abort arrived meanwhile. */
static int wait_token(FakeLLM* m) {
    long left = m->delay_us;
    while (left > 0) {
        if (atomic_load(&m->abort_flag)) return 1;
        long step = left < 1000 ? left : 1000;
        struct timespec ts = {0, step * 1000};
        nanosleep(&ts, NULL);
        left -= step;
    }
    return atomic_load(&m->abort_flag);
}

RKLLMParam rkllm_createDefaultParam(void) {
    RKLLMParam p;
    memset(&p, 0, sizeof p);
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 40;
    p.n_keep = -1;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    p.repeat_penalty = 1.1f;
    p.mirostat_tau = 5.0f;
    p.mirostat_eta = 0.1f;
    p.skip_special_token = true;
    /* extend_param stays zeroed: n_batch 0 is refused by rkllm_init, as the real runtime does. */
    return p;
}

#if FAKE_RKLLM_API == 13
int rkllm_init(LLMHandle* handle, RKLLMParam* param, RKLLMCallback* callback) {
    if (!callback || !callback->result_callback) return -1;
#else
int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback) {
    if (!callback) return -1;
#endif
    if (!handle || !param || !param->model_path) return -1;
    if (param->extend_param.n_batch < 1 || param->extend_param.n_batch > 100) {
        fprintf(stderr, "E rkllm: n_batch must be between 1 and 100, but got %d\n", param->extend_param.n_batch);
        return -1;
    }
    if (param->top_k < 0 || param->top_p < 0 || param->top_p > 1) {
        fprintf(stderr, "E rkllm: invalid sampling parameters (top_k %d, top_p %f)\n", param->top_k, param->top_p);
        return -1;
    }
    if (param->extend_param.enabled_cpus_num != __builtin_popcount(param->extend_param.enabled_cpus_mask)) {
        fprintf(stderr, "E rkllm: enabled_cpus_num does not match enabled_cpus_mask\n");
        return -1;
    }
    FILE* f = fopen(param->model_path, "rb");
    if (!f) {
        fprintf(stderr, "E rkllm: failed to open model file %s\n", param->model_path);
        return -1;
    }
    fclose(f);
    FakeLLM* m = calloc(1, sizeof *m);
    m->param = *param;
    snprintf(m->model_path, sizeof m->model_path, "%s", param->model_path);
    m->param.model_path = m->model_path;
#if FAKE_RKLLM_API == 13
    m->callback = callback->result_callback;
    m->callback_userdata = callback->result_userdata;
    m->tokenizer = callback->tokenizer_callback;
    m->tokenizer_userdata = callback->tokenizer_userdata;
#else
    m->callback = callback;
#endif
    const char* delay = getenv("FAKE_RKLLM_TOKEN_DELAY_MS");
    m->delay_us = delay ? (long)(atof(delay) * 1000) : 0;
    m->markers = calloc(1, 1);
    n_inits++;
    fprintf(stderr, BANNER_FORMAT, VERSION, "0.9.8", "RK3588");
#ifdef FAKE_SDK
    fprintf(stderr, "I rkllm: %s\n", SDK_LINE);
#endif
    *handle = m;
    return 0;
}

static int emit(FakeLLM* m, RKLLMResult* r, void* ud, const char* text, int token_id, LLMCallState state) {
    r->text = text;
    r->token_id = token_id;
    return m->callback(r, ud, state);
}

static unsigned long hash_bytes(const char* s, size_t n) {
    unsigned long h = 1469598103934665603UL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211UL;
    return h;
}

static size_t char_len(unsigned char c) {
    return c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
}

/* Splits text into words in place (pointers into `buf`). */
static int split_words(char* buf, char** words) {
    int n = 0;
    for (char* tok = strtok(buf, " \t\n"); tok && n < MAX_WORDS; tok = strtok(NULL, " \t\n")) words[n++] = tok;
    return n;
}

static int run_hidden(FakeLLM* m, void* ud, char** words, int n, RKLLMResult* r) {
    const char* empty_first = getenv("FAKE_RKLLM_HIDDEN_EMPTY_FIRST");
    if (empty_first && *empty_first == '1') { /* rknn-llm #278: a NORMAL callback without hidden states first */
        int rc = emit(m, r, ud, NULL, 0, RKLLM_RUN_NORMAL);
        if (rc != 0) return rc;
    }
    float* states = malloc(sizeof(float) * FAKE_DIM * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        unsigned long h = hash_bytes(words[i], strlen(words[i]));
        for (int j = 0; j < FAKE_DIM; j++) {
            h ^= h << 13; h ^= h >> 7; h ^= h << 17;
            states[i * FAKE_DIM + j] = (float)((h % 2001) / 1000.0 - 1.0);
        }
    }
    r->last_hidden_layer.hidden_states = states;
    r->last_hidden_layer.embd_size = FAKE_DIM;
    r->last_hidden_layer.num_tokens = n;
    emit(m, r, ud, NULL, 0, RKLLM_RUN_NORMAL);
    memset(states, 0xff, sizeof(float) * FAKE_DIM * (n ? n : 1)); /* NaN: a late reader sees garbage */
    free(states);
    memset(&r->last_hidden_layer, 0, sizeof r->last_hidden_layer);
    return 0;
}

/* Echoes the words, one callback per token: returns 0 when done, the callback's non-zero answer, or -1 on abort. */
static int run_generate(FakeLLM* m, void* ud, char** words, int n, int limit, RKLLMResult* r, int* generated) {
    char piece[16];
    for (int w = 0; w < n; w++) {
        const char* s = words[w];
        size_t len = strlen(s), i = 0;
        int multibyte_seen = 0;
        while (i <= len) {
            if (limit > 0 && *generated >= limit) return 0;
            if (wait_token(m)) return -1;
            int rc;
            if (i == len) {
                rc = emit(m, r, ud, " ", 220, RKLLM_RUN_NORMAL);
                i++;
            } else if (char_len((unsigned char)s[i]) == 1) {
                size_t j = i;
                while (j < len && char_len((unsigned char)s[j]) == 1) j++;
                char* text = strndup(s + i, j - i);
                rc = emit(m, r, ud, text, (int)(hash_bytes(text, j - i) % 32000), RKLLM_RUN_NORMAL);
                free(text);
                i = j;
            } else {
                size_t cl = char_len((unsigned char)s[i]);
                multibyte_seen++;
                if (multibyte_seen == 1) { /* 1.1 style: the character's bytes across two NORMAL callbacks */
                    snprintf(piece, sizeof piece, "%.*s", 1, s + i);
                    rc = emit(m, r, ud, piece, 1000, RKLLM_RUN_NORMAL);
                    (*generated)++;
                    if (rc != 0) return rc;
                    if (wait_token(m)) return -1;
                    snprintf(piece, sizeof piece, "%.*s", (int)cl - 1, s + i + 1);
                    rc = emit(m, r, ud, piece, 1001, RKLLM_RUN_NORMAL);
                } else if (multibyte_seen == 2) { /* 1.2 style: WAITING without text, then the whole character */
                    rc = emit(m, r, ud, NULL, 1002, RKLLM_RUN_WAITING);
                    (*generated)++;
                    if (rc != 0) return rc;
                    if (wait_token(m)) return -1;
                    snprintf(piece, sizeof piece, "%.*s", (int)cl, s + i);
                    rc = emit(m, r, ud, piece, 1003, RKLLM_RUN_NORMAL);
                } else {
                    snprintf(piece, sizeof piece, "%.*s", (int)cl, s + i);
                    rc = emit(m, r, ud, piece, 1004, RKLLM_RUN_NORMAL);
                }
                i += cl;
            }
            (*generated)++;
            if (rc != 0) return rc;
        }
    }
    return 0;
}

static char* ids_as_words(const int32_t* ids, size_t n) {
    char* out = calloc(n * 12 + 1, 1);
    for (size_t i = 0; i < n; i++) sprintf(out + strlen(out), "t%d ", ids[i]);
    return out;
}

/* The input as words; NULL when it cannot be read. Token ids become words "t<id>". */
static char* input_text(FakeLLM* m, const RKLLMInput* in) {
    if (in->input_type == RKLLM_INPUT_TOKEN) return ids_as_words(in->token_input.input_ids, in->token_input.n_tokens);
    if (in->input_type != RKLLM_INPUT_PROMPT) return NULL;
    const char* prompt = in->prompt_input ? in->prompt_input : "";
#if FAKE_RKLLM_API == 13
    if (m->tokenizer) { /* a model without its own tokenizer: the text goes out with its length and no NUL */
        size_t len = strlen(prompt);
        char* text = malloc(len + 6);
        memcpy(text, prompt, len);
        memcpy(text + len, " JUNK", 6); /* what a reader that ignores text_len would also take */
        int32_t ids[MAX_WORDS];
        int n = m->tokenizer(m->tokenizer_userdata, text, (int32_t)len, ids, MAX_WORDS);
        free(text);
        return n < 0 ? NULL : ids_as_words(ids, (size_t)n);
    }
#else
    (void)m;
#endif
    return strdup(prompt);
}

static void add_markers(FakeLLM* m, char** words, int n) {
    for (int i = 0; i < n; i++) {
        if (words[i][0] != '#') continue;
        size_t have = strlen(m->markers), add = strlen(words[i]);
        m->markers = realloc(m->markers, have + add + 2);
        sprintf(m->markers + have, "%s%s", have ? "," : "", words[i]);
    }
}

static void forget_context(FakeLLM* m) {
    m->kv_len = 0;
    m->markers[0] = '\0';
}

static int has_word(char** words, int n, const char* w) {
    for (int i = 0; i < n; i++)
        if (strcmp(words[i], w) == 0) return 1;
    return 0;
}

/* The reply of a "[[sampling]]" run: the sampling values this run was given. */
static char* sampling_reply(FakeLLM* m, const RKLLMInferParam* infer) {
    int top_k = m->param.top_k;
    float top_p = m->param.top_p, temperature = m->param.temperature, repeat = m->param.repeat_penalty;
#if FAKE_RKLLM_API == 13
    if (infer->sampling_params) {
        top_k = infer->sampling_params->top_k;
        top_p = infer->sampling_params->top_p;
        temperature = infer->sampling_params->temperature;
        repeat = infer->sampling_params->repeat_penalty;
    }
#else
    (void)infer;
#endif
    char* out = malloc(160);
    snprintf(out, 160, "temperature=%.3f top_p=%.3f top_k=%d repeat_penalty=%.3f inits=%d", temperature, top_p, top_k,
             repeat, n_inits);
    return out;
}

int rkllm_run(LLMHandle handle, RKLLMInput* in, RKLLMInferParam* infer, void* userdata) {
    FakeLLM* m = handle;
    if (!m || !in || !infer) return -1;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&m->running, &expected, 1)) return -1;
    atomic_store(&m->abort_flag, 0);
#if FAKE_RKLLM_API == 13
    void* ud = userdata ? userdata : m->callback_userdata;
#else
    void* ud = userdata;
#endif
    RKLLMResult r;
    memset(&r, 0, sizeof r);
    char* text = input_text(m, in);
    if (!text) {
        fprintf(stderr, "E rkllm: cannot read the input (only prompt and token input; tokenizer callback failed?)\n");
        emit(m, &r, ud, NULL, -1, RKLLM_RUN_ERROR);
        atomic_store(&m->running, 0);
        return -1;
    }
    record("run", in->role ? in->role : "(null)", in->enable_thinking ? "1" : "0", text);
    if (strstr(text, "[[crash]]")) abort();
    if (strstr(text, "[[error]]")) {
        emit(m, &r, ud, NULL, -1, RKLLM_RUN_ERROR);
        free(text);
        atomic_store(&m->running, 0);
        return 0;
    }
    if (!infer->keep_history && !m->paused) forget_context(m);
    m->paused = 0;
    char* words[MAX_WORDS];
    int n = split_words(text, words), prefilled = n;
    double t0 = now_ms();
    m->kv_len += n;
    add_markers(m, words, n);
    if (m->kv_len > m->param.max_context_len) {
        emit(m, &r, ud, NULL, -1, RKLLM_RUN_ERROR);
        free(text);
        atomic_store(&m->running, 0);
        return -1;
    }
    double t1 = now_ms();
    int generated = 0, rc = 0;
    if (infer->mode == RKLLM_INFER_GET_LAST_HIDDEN_LAYER) {
        rc = run_hidden(m, ud, words, n, &r);
    } else if (infer->mode == RKLLM_INFER_GENERATE) {
        int limit = m->param.max_new_tokens;
#if FAKE_RKLLM_API == 13
        if (infer->max_new_tokens > 0) limit = infer->max_new_tokens;
#endif
        char* reply = NULL;
        if (has_word(words, n, "[[sampling]]")) {
            reply = sampling_reply(m, infer);
        } else if (has_word(words, n, "[[ctx]]")) {
            reply = malloc(strlen(m->markers) + 5);
            sprintf(reply, "ctx=%s", m->markers);
        } else if (in->enable_thinking && getenv("FAKE_RKLLM_THINKING")) {
            static const char THOUGHT[] = "<think> the user wants an echo. </think>";
            size_t size = sizeof THOUGHT;
            for (int i = 0; i < n; i++) size += strlen(words[i]) + 1;
            reply = malloc(size);
            strcpy(reply, THOUGHT);
            for (int i = 0; i < n; i++) sprintf(reply + strlen(reply), " %s", words[i]);
        }
        if (reply) {
            n = split_words(reply, words);
        }
        rc = run_generate(m, ud, words, n, limit, &r, &generated);
        m->kv_len += generated;
        if (!reply) add_markers(m, words, n); /* the echoed words enter the context too */
        free(reply);
    } else {
        rc = -2;
    }
    free(text);
    if (rc == 1) { /* paused by the callback: the run returns, the KV cache stays for a resume */
        m->paused = 1;
        atomic_store(&m->running, 0);
        return 0;
    }
    if (rc == -2) {
        emit(m, &r, ud, NULL, -1, RKLLM_RUN_ERROR);
        atomic_store(&m->running, 0);
        return -1;
    }
    r.perf.prefill_time_ms = (float)(t1 - t0);
    r.perf.prefill_tokens = prefilled;
    r.perf.generate_time_ms = (float)(now_ms() - t1);
    r.perf.generate_tokens = generated;
    r.perf.memory_usage_mb = vm_hwm_mb();
    emit(m, &r, ud, NULL, -1, RKLLM_RUN_FINISH);
    atomic_store(&m->running, 0);
    return 0;
}

int rkllm_run_async(LLMHandle handle, RKLLMInput* in, RKLLMInferParam* infer, void* userdata) {
    (void)handle; (void)in; (void)infer; (void)userdata;
    fprintf(stderr, "E rkllm: the fake runtime does not implement rkllm_run_async\n");
    return -1;
}

int rkllm_abort(LLMHandle handle) {
    FakeLLM* m = handle;
    if (!m) return -1;
    atomic_store(&m->abort_flag, 1);
    return 0;
}

int rkllm_is_running(LLMHandle handle) {
    FakeLLM* m = handle;
    int running = m && atomic_load(&m->running);
#if FAKE_RKLLM_API == 13
    return running ? 1 : 0;
#else
    return running ? 0 : 1;
#endif
}

int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int* start_pos, int* end_pos) {
    FakeLLM* m = handle;
    (void)keep_system_prompt;
    if (!m || atomic_load(&m->running)) return -1;
    if (!start_pos && !end_pos) {
        forget_context(m);
        m->paused = 0;
        return 0;
    }
    if (!start_pos || !end_pos || !m->paused || end_pos[0] < start_pos[0] || end_pos[0] > m->kv_len) return -1;
    m->kv_len -= end_pos[0] - start_pos[0];
    return 0;
}

int rkllm_get_kv_cache_size(LLMHandle handle, int* cache_sizes) {
    FakeLLM* m = handle;
    if (!m || !cache_sizes) return -1;
    cache_sizes[0] = m->kv_len;
    return 0;
}

int rkllm_set_chat_template(LLMHandle handle, const char* system_prompt, const char* prompt_prefix, const char* prompt_postfix) {
    return handle && system_prompt && prompt_prefix && prompt_postfix ? 0 : -1;
}

int rkllm_set_function_tools(LLMHandle handle, const char* system_prompt, const char* tools, const char* tool_response_str) {
    if (!handle || !system_prompt || !tools || !tool_response_str) return -1;
    record("set_function_tools", system_prompt, tools, tool_response_str);
    return 0;
}

int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam* cross_attn_params) {
    return handle && cross_attn_params ? 0 : -1;
}

int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter* lora_adapter) {
    if (!handle || !lora_adapter || !lora_adapter->lora_adapter_path) return -1;
    FILE* f = fopen(lora_adapter->lora_adapter_path, "rb");
    if (!f) return -1;
    fclose(f);
    return 0;
}

int rkllm_load_prompt_cache(LLMHandle handle, const char* prompt_cache_path) {
    if (!handle || !prompt_cache_path) return -1;
    FILE* f = fopen(prompt_cache_path, "rb");
    if (!f) return -1;
    fclose(f);
    return 0;
}

int rkllm_release_prompt_cache(LLMHandle handle) {
    return handle ? 0 : -1;
}

int rkllm_destroy(LLMHandle handle) {
    FakeLLM* m = handle;
    if (!m) return -1;
    if (atomic_load(&m->running)) return -1;
    free(m->markers);
    free(m);
    return 0;
}
