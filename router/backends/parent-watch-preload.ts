// Preloaded into every runtime child by the local backend (`node --import <this module's URL>`):
// see parent-watch.ts.
import { watchParent } from "./parent-watch.js";

watchParent();
