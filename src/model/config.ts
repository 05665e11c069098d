/**
 * Model configurations, with the reference implementation's field names.
 * A config travels in a tost safetensors file as `__metadata__.config` (JSON).
 *
 * @module
 */

/** Attention used by a model's blocks. */
export type AttentionKind = "tssa" | "softmax";

/**
 * Vision ToST (`tost_cab_*`) or its ViT twin (`vit_cab_*`): XCiT-style
 * convolutional stem, Fourier positional encoding, `depth` blocks, class
 * token, `cls_attn_layers` class-attention blocks, final norm, linear head.
 */
export interface VisionConfig {
  family: "vision";
  /** "tssa" for ToST, "softmax" for ViT. */
  attention: AttentionKind;
  img_size: number;
  /** 8 (three conv3x3 stride-2 + BN stages) or 16 (four). */
  patch_size: number;
  in_chans: number;
  num_classes: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  mlp_ratio: number;
  qkv_bias: boolean;
  /** Layer-scale initial value (the `gamma*` parameters). */
  eta: number;
  tokens_norm: boolean;
  cls_attn_layers: number;
  /** Hidden width of the Fourier positional encoding (XCiT: 32). */
  pos_hidden_dim: number;
  /** LayerNorm epsilon (1e-6 in the reference). */
  norm_eps: number;
}

/**
 * Language ToST (nanoGPT-style `GPT` with `TSSA=True`) or plain GPT
 * (`TSSA=False`, causal softmax).
 */
export interface LanguageConfig {
  family: "language";
  attention: AttentionKind;
  block_size: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_embd: number;
  bias: boolean;
  dropout: number;
  /** LayerNorm epsilon (1e-5 in the reference). */
  norm_eps: number;
}

/** Any model tost can run. */
export type ModelConfig = VisionConfig | LanguageConfig;
