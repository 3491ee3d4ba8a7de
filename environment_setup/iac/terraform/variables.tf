variable "subscription_id" {
  description = "Azure subscription to deploy into (AZURE_SUBSCRIPTION_ID in the variable group)."
  type        = string
  default     = null
}

variable "base_name" {
  description = "Short prefix of every resource name: 3 to 10 lower-case letters or digits (BASE_NAME)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,10}$", var.base_name))
    error_message = "base_name must be 3 to 10 lower-case letters or digits (it becomes part of storage and registry names)."
  }
}

variable "location" {
  description = "Azure region, e.g. westeurope (LOCATION)."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group that holds the workspace and its resources (RESOURCE_GROUP); created here."
  type        = string
}

variable "workspace_name" {
  description = "Name of the Azure ML workspace (WORKSPACE_NAME)."
  type        = string
}

variable "compute_cluster_name" {
  description = "Name of the Azure ML compute cluster the training jobs run on (AML_COMPUTE_CLUSTER_NAME)."
  type        = string
  default     = "cpu-cluster"
}

variable "compute_vm_size" {
  description = "VM size of the cluster's nodes."
  type        = string
  default     = "Standard_DS3_v2"
}

variable "compute_max_nodes" {
  description = "Most nodes the cluster scales to; at least the parallel step's instance_count (ff/pipeline_config.json)."
  type        = number
  default     = 4

  validation {
    condition     = var.compute_max_nodes >= 1
    error_message = "compute_max_nodes must be at least 1."
  }
}

variable "compute_low_priority" {
  description = "Low-priority (preemptible, cheaper) nodes instead of dedicated ones."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace behind Application Insights keeps data."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Tags put on every resource."
  type        = map(string)
  default = {
    project = "mlops-template"
  }
}
