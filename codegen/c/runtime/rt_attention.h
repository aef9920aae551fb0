/* Fused attention (moec.attention): flash-style, online softmax over key blocks. */
#ifndef MOEC_RT_ATTENTION_H
#define MOEC_RT_ATTENTION_H
#include "moec_rt.h"

/* y[B,Hq,S,Dv] = softmax(scale * q k^T + mask (+ causal)) v with Hq a multiple of Hkv (GQA); mask may be
 * NULL, else an f32 tensor broadcasting to [B,Hq,S,T].  f32 only.  A row with no finite score is 0. */
int moec_k_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                     const moec_tensor *mask, double scale, int causal, moec_tensor *y);
/* the same over the first T key/value rows of k, v [B,Hkv,M,D] (T <= M; rows >= T are never read; the mask
 * broadcasts to [B,Hq,S,T], causal row i sees keys j <= i + T - S): moec.kv_attention's kernel */
int moec_attention_rows(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v, int64_t T,
                        const moec_tensor *mask, double scale, int causal, moec_tensor *y);
/* y = x * cos + rot(x) * sin over the last dim (rotate_half, or pairs when interleaved); cos and sin
 * broadcast to x.  f32. */
int moec_k_rotary(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *cos_t, const moec_tensor *sin_t,
                  int interleaved, moec_tensor *y);
#endif
