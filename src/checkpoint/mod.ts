/**
 * Reading PyTorch checkpoints safely (zip format and the legacy pre-1.6
 * format), choosing the model's state_dict in them, inferring the model's
 * config from names and shapes, and converting them to safetensors while
 * streaming tensor by tensor.
 *
 * Nothing a checkpoint contains is ever executed: the unpickler interprets
 * only the tensor rebuild functions, the storage types, `OrderedDict` and a
 * few plain data constructors; every other global is an inert name, and
 * globals only an attack would name (`os.system`, `builtins.eval`, …) are
 * refused.
 *
 * Every problem with a checkpoint's content raises a
 * {@linkcode CheckpointError} whose message is
 * `Cannot read checkpoint "<file>": <what and where>`; a missing file raises
 * `Deno.errors.NotFound`.
 *
 * @module
 */

export { CheckpointError } from "./errors.ts";
export {
  architectureName,
  convertCheckpoint,
  type ConvertOptions,
  type ConvertResult,
  loadCheckpoint,
  type LoadedCheckpoint,
  type LoadOptions,
  type TargetDType,
} from "./convert.ts";
export {
  type CheckpointInspection,
  inspectCheckpoint,
  type TensorInfo,
  type TopLevelEntry,
} from "./inspect.ts";
export { type ConfigHints, crossCheckConfig, inferConfig, type ShapeMap } from "./config.ts";
export { type OpenCheckpoint, openCheckpoint, StorageRef, TensorRef } from "./torch.ts";
export {
  type PickleValue,
  PyFloat,
  PyGlobal,
  PyObject,
  unpickle,
  type UnpickleOptions,
} from "./pickle.ts";
