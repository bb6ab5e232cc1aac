// The widget manager: @jupyter-widgets/html-manager's HTMLManager (ipywidgets 8 models and views,
// the Output widget's renderers) whose comms are those of one multiplexed socket.

import { uuid, put_buffers } from "@jupyter-widgets/base";
import { HTMLManager } from "@jupyter-widgets/html-manager/lib/htmlmanager";
import { anywidgetModule } from "./anywidget";
import { MuxComm } from "./comm";
import type { Buffers, Frame } from "./frames";
import type { Hello, MuxSocket } from "./socket";

export const WIDGET_TARGET = "jupyter.widget";

/** Loads the module of a widget library the bundle does not include (e.g. bqplot). */
export type Loader = (moduleName: string, moduleVersion: string) => Promise<any> | any;

/** A state in the embed format (`Widget.get_manager_state()` of ipywidgets). */
export type EmbedState = {
  [modelId: string]: {
    model_name: string;
    model_module: string;
    model_module_version: string;
    state: Record<string, unknown>;
    buffers?: { path: (string | number)[]; data: string; encoding: "base64" | "hex" }[];
  };
};

export class WidgetManager extends HTMLManager {
  readonly socket: MuxSocket;
  hello: Hello; // the first connection's, then the latest reset / overflow's (see Widgets)
  private readonly userLoader: Loader | undefined;

  constructor(socket: MuxSocket, hello: Hello, loader?: Loader) {
    super({ loader });
    this.socket = socket;
    this.hello = hello;
    this.userLoader = loader;
    socket.onOpen = (frame, buffers) => this.opened(frame, buffers);
  }

  get canSend(): boolean {
    return this.hello.can_send;
  }

  /** A comm of the socket: attached (the socket follows the widget target, so it is on every
   * widget comm already) or, given `data`, opened in the kernel by this page. */
  async _create_comm(
    targetName: string,
    modelId?: string,
    data?: any,
    metadata?: any,
    buffers?: ArrayBuffer[] | ArrayBufferView[],
  ): Promise<MuxComm> {
    const comm = new MuxComm(this.socket, modelId ?? uuid(), targetName, () => this.canSend);
    if (data !== undefined) comm.open(data, undefined, metadata, buffers as any);
    return comm;
  }

  /** The kernel's widget comms, as the socket's `hello` listed them. */
  async _get_comm_info(): Promise<Record<string, { target_name: string }>> {
    const info: Record<string, { target_name: string }> = {};
    for (const { comm_id, target_name } of this.hello.comms) {
      if (target_name === WIDGET_TARGET) info[comm_id] = { target_name };
    }
    return info;
  }

  /** Load every model of the kernel with the control comm's request_states (JupyterLab's way). */
  loadFromKernel(): Promise<void> {
    return this._loadFromKernel();
  }

  /** ManagerBase's fallback when the control comm failed. A kernel that has not imported
   * ipywidgets refuses that comm and has no widget yet: nothing to load (widgets it makes later
   * arrive as `open` frames). ipywidgets answers on the kernel's latest control comm only, so a
   * page that asked at the same moment as another gets no answer: it asks once more. The
   * fallback proper (ipywidgets < 7.7) matches replies by parent header, which the socket does
   * not carry. */
  async _loadFromKernelModels(): Promise<void> {
    if (!this.socket.open) throw new Error(`the widgets socket is ${this.socket.status}`);
    if (Object.keys(await this._get_comm_info()).length === 0) return;
    if (!this.askedAgain) {
      this.askedAgain = true;
      return this._loadFromKernel();
    }
    throw new Error("the kernel did not answer request_states on jupyter.widget.control");
  }

  private askedAgain = false;

  register_model(modelId: string, modelPromise: Promise<any>): void {
    super.register_model(modelId, modelPromise);
    this.onModel(modelId);
  }

  /** Called with each model id registered (set by connect(), for render() to wait on). */
  onModel: (modelId: string) => void = () => {};

  /** Load the models of a state snapshot (the embed format), creating those not loaded yet. */
  async loadState(states: EmbedState): Promise<void> {
    // Every new_model is called before the first await, so that a model whose state refers to
    // another (IPY_MODEL_…) finds its promise registered (as ManagerBase._loadFromKernel does).
    const loads = Object.entries(states).map(([modelId, model]) => {
      const state = model.state;
      if (model.buffers?.length) {
        const paths = model.buffers.map((b) => b.path);
        put_buffers(state as any, paths, model.buffers.map(decodeBuffer));
      }
      if (this.has_model(modelId)) return this.refresh(modelId, state);
      const comm = new MuxComm(this.socket, modelId, WIDGET_TARGET, () => this.canSend);
      const options = {
        model_name: model.model_name,
        model_module: model.model_module,
        model_module_version: model.model_module_version,
        model_id: modelId,
        comm,
      };
      return this.new_model(options, state).catch((error: unknown) => console.error(error));
    });
    await Promise.all(loads);
  }

  loadClass(className: string, moduleName: string, moduleVersion: string): Promise<any> {
    if (moduleName === "anywidget") {
      const cls = anywidgetModule()[className];
      if (cls === undefined) return Promise.reject(new Error(`anywidget has no ${className}`));
      return Promise.resolve(cls);
    }
    if (this.userLoader === undefined && !BUILT_IN.has(moduleName)) {
      const message =
        `no widget library ${moduleName}@${moduleVersion} in the page: ` +
        "pass Widgets.connect({ loader }) to load it";
      return Promise.reject(new Error(message));
    }
    return super.loadClass(className, moduleName, moduleVersion);
  }

  async _make_model(options: any, serializedState: any = {}): Promise<any> {
    const model = await super._make_model(options, serializedState);
    if (!this.canSend) keepDisabled(model);
    return model;
  }

  private async refresh(modelId: string, state: Record<string, unknown>): Promise<void> {
    const model: any = await this.get_model(modelId);
    model.set_state(await model.constructor._deserialize_state(state, this));
  }

  // A comm the kernel opened on a followed target: a new widget, or a publisher.
  private opened(frame: Frame, buffers: Buffers): void {
    const commId = frame.comm_id as string;
    const target = frame.target_name as string;
    const comm = new MuxComm(this.socket, commId, target, () => this.canSend);
    const msg = { ...comm.message("comm_open", frame.data, buffers), metadata: frame.metadata };
    if (target === WIDGET_TARGET) {
      this.handle_comm_open(comm, msg as any).catch((error: unknown) => console.error(error));
    } else {
      this.dispatchOpen(comm, msg);
    }
  }

  /** Another followed target's comm opened (the publisher's): set by connect(). */
  dispatchOpen: (comm: MuxComm, msg: unknown) => void = () => {};
}

const BUILT_IN = new Set([
  "@jupyter-widgets/base",
  "@jupyter-widgets/controls",
  "@jupyter-widgets/output",
]);

// A read-only user sees every control disabled, whatever the kernel says of `disabled`: the
// local value is never synced (the comm does not send for a read-only page).
function keepDisabled(model: any): void {
  if (!("disabled" in model.attributes)) return;
  model.set("disabled", true);
  model.on("change:disabled", () => model.get("disabled") || model.set("disabled", true));
}

function decodeBuffer({ data, encoding }: { data: string; encoding: string }): DataView {
  if (encoding === "hex") {
    const bytes = new Uint8Array(data.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(data.slice(2 * i, 2 * i + 2), 16);
    return new DataView(bytes.buffer);
  }
  const binary = atob(data);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new DataView(bytes.buffer);
}
